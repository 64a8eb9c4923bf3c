"""``avatar-server engine --port N --data-dir D`` as a user runs it: its avatars and documents live in
an embedded Redis under D and survive a restart of the command."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from avatar_server.store.embedded import free_port
from tests.catalog_helpers import avatar_body

from .cli_helpers import assert_embedded_redis_stopped, clean_env, http_json, launch, stop

KEY = "sk_cli_engine_" + "k" * 20


def request(base: str, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
    return http_json(base + path, method, body, headers)


def start(tmp: Path, port: int) -> subprocess.Popen[str]:
    env = clean_env(tmp / "server-data", AVATAR_ENGINE_AVATAR_DELAY="fixed:0.1")
    args = ["engine", "--port", str(port), "--api-key", KEY, "--data-dir", str(tmp / "engine-data")]
    base = f"http://127.0.0.1:{port}"
    return launch(args, env, lambda: request(base, "/v1/avatars?limit=1")[0] == 200, "engine")


def test_standalone_engine_keeps_its_catalog_in_its_data_dir(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(tmp_path, port)
    try:
        assert http_json(base + "/healthz", "GET", None, {}) == (200, {"status": "ok"})  # no key needed
        status, doc = request(base, "/v1/documents", "POST", {"name": "faq.md", "content": "Open daily."})
        assert status == 200, doc
        status, avatar = request(base, "/v1/avatars", "POST", avatar_body(documentIds=[doc["id"]]))
        assert status == 200, avatar
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert (tmp_path / "engine-data" / "redis").is_dir()  # the embedded Redis lives under --data-dir
    assert not (tmp_path / "server-data" / "redis").exists()
    assert_embedded_redis_stopped(tmp_path / "engine-data" / "redis")  # and stops with the engine
    proc = start(tmp_path, port)
    try:
        status, got = request(base, f"/v1/avatars/{avatar['id']}")
        assert status == 200 and got["status"] == "READY" and got["documentIds"] == [doc["id"]]
        status, got_doc = request(base, f"/v1/documents/{doc['id']}")
        assert status == 200 and got_doc["usedBy"][0]["id"] == avatar["id"]
    finally:
        stop(proc)
