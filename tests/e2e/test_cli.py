"""The command as a user runs it: embedded defaults (local engine + embedded Redis), data
surviving a restart, and bad settings stopping the start with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from avatar_server.store.embedded import free_port


def run_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_", "RUNWAYML_", "REDIS_URL"))}
    env.update({"AVATAR_SERVER_DATA_DIR": str(tmp / "data"), **extra})
    return env


@pytest.mark.parametrize(
    "extra,needle",
    [
        ({"AVATAR_SERVER_SESSION_CAP_SECONDS": "600"}, "AVATAR_SERVER_SESSION_CAP_SECONDS"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "REDIS_URL is not reachable"),
        ({"RUNWAYML_BASE_URL": "not a url"}, "RUNWAYML_BASE_URL"),
    ],
)
def test_bad_settings_stop_the_start_with_one_line(tmp_path: Path, extra: dict[str, str], needle: str) -> None:
    env = run_env(tmp_path, AVATAR_SERVER_PORT=str(free_port()), **extra)
    proc = subprocess.run([sys.executable, "-m", "avatar_server"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


def get(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "avatar_server"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return proc
        except OSError:
            pass
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not become ready")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def test_fresh_run_on_embedded_defaults_and_data_survive_restart(tmp_path: Path) -> None:
    port = free_port()
    env = run_env(tmp_path, AVATAR_SERVER_PORT=str(port), AVATAR_ENGINE_PROVISION_DELAY="fixed:0.2")
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
    redis_pid = tmp_path / "data" / "redis" / "redis.pid"
    assert not redis_pid.exists() or not Path(f"/proc/{redis_pid.read_text().strip()}").exists()
    proc = start(env, port)
    try:
        status, rec = get(f"{base}/v1/sessions/{sid}", token)
        assert status == 200 and rec["id"] == sid  # the record survived in the embedded Redis
        get(f"{base}/v1/sessions/{sid}", token, "DELETE")
    finally:
        out = stop(proc)
    assert "generated an admin token" not in out
