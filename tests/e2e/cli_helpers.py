"""Running ``python -m avatar_server`` as a user does: a clean environment, a start that waits
until the process answers, a SIGTERM stop, and plain urllib JSON calls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any AVATAR_*, RUNWAYML_* or REDIS_URL, data under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_", "RUNWAYML_", "REDIS_URL"))}
    env.update({"AVATAR_SERVER_DATA_DIR": str(data_dir), **extra})
    return env


def http_json(
    url: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if body:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def launch(
    args: list[str], env: dict[str, str], ready: Callable[[], bool], what: str
) -> subprocess.Popen[str]:
    """Start ``python -m avatar_server *args`` and wait (30 s at most) until ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "avatar_server", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if ready():
                return proc
        except OSError:
            pass
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{what} did not start")


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then the process's whole output."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def assert_embedded_redis_stopped(redis_dir: Path) -> None:
    pid_file = redis_dir / "redis.pid"
    assert not pid_file.exists() or not Path(f"/proc/{pid_file.read_text().strip()}").exists()
