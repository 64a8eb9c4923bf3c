"""The command as a user runs it: embedded defaults (local engine + embedded Redis), data
surviving a restart, and bad settings stopping the start with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from avatar_server.store.embedded import free_port

from .cli_helpers import assert_embedded_redis_stopped, clean_env, http_json, launch, stop


@pytest.mark.parametrize(
    "extra,needle",
    [
        ({"AVATAR_SERVER_SESSION_CAP_SECONDS": "600"}, "AVATAR_SERVER_SESSION_CAP_SECONDS"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "REDIS_URL is not reachable"),
        ({"RUNWAYML_BASE_URL": "not a url"}, "RUNWAYML_BASE_URL"),
    ],
)
def test_bad_settings_stop_the_start_with_one_line(tmp_path: Path, extra: dict[str, str], needle: str) -> None:
    env = clean_env(tmp_path / "data", AVATAR_SERVER_PORT=str(free_port()), **extra)
    proc = subprocess.run([sys.executable, "-m", "avatar_server"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


def get(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> tuple[int, Any]:
    return http_json(url, method, body, {"Authorization": f"Bearer {token}"} if token else None)


def start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return launch([], env, lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "server")


def test_fresh_run_on_embedded_defaults_and_data_survive_restart(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path / "data", AVATAR_SERVER_PORT=str(port),
                    AVATAR_ENGINE_PROVISION_DELAY="fixed:0.2")
    base = f"http://127.0.0.1:{port}"
    proc = start(env, port)
    try:
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        status, body = get(f"{base}/v1/sessions/connect", token, "POST", {"avatarId": "game-character"})
        assert status == 200, body
        sid = body["sessionId"]
        status, rec = get(f"{base}/v1/sessions/{sid}", token)
        assert rec["status"] == "RUNNING"
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert token not in out  # printed where it is stored, never the token itself
    assert "generated an admin token" in out
    assert_embedded_redis_stopped(tmp_path / "data" / "redis")
    proc = start(env, port)
    try:
        status, rec = get(f"{base}/v1/sessions/{sid}", token)
        assert status == 200 and rec["id"] == sid  # the record survived in the embedded Redis
        get(f"{base}/v1/sessions/{sid}", token, "DELETE")
    finally:
        out = stop(proc)
    assert "generated an admin token" not in out
