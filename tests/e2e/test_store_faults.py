"""The server's own Redis breaking, and two servers on one data dir — as a user runs it: the
command on its embedded defaults (local engine, embedded redis-server), real processes, real
signals, the processes counted through /proc.

- The embedded redis-server SIGKILLed with sessions live: API calls answer 503
  ``store_unavailable`` with ``Retry-After`` and /readyz 503 while it is away, it comes back by
  itself with the data, every cap still fires (within 5 s of ``endsAt``, also one that fell due
  while it was away), no upstream session is left running, and the log says "down" once and
  "back" once.
- ``REDIS_URL``'s Redis going away: the same 503 answers and log lines, and the client back on
  its own once that Redis is.
- A second server or engine on the same data dir exits 1 with one line and touches nothing.
- The supervisor never restarts it after ``close()``.
- After a ``kill -9`` of the server (twice in a row, and with an orphaned redis-server left in
  the data dir) the next start serves with exactly one redis-server on that data dir.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from avatar_server.store.embedded import EmbeddedRedis, free_port
from avatar_server.store.ownership import DataDirLock

from .cli_helpers import clean_env, http_json

pytestmark = pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="counts processes through /proc")

CONTROL_HEADERS = {"X-Runway-Version": "2024-11-06"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


# --- processes ----------------------------------------------------------------------------


def redis_servers(directory: Path) -> list[int]:
    """Live redis-server processes whose working directory (redis-server's ``--dir``) is ``directory``."""
    want = directory.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].split()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = Path(os.readlink(entry / "cwd"))
        except (OSError, IndexError):
            continue
        if argv0 and os.path.basename(argv0[0]).startswith(b"redis-server") and cwd == want and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


class Server:
    """``python -m avatar_server`` with its output in a file (read while it runs)."""

    def __init__(self, tmp: Path, data: Path, port: int, name: str = "server", **env: str) -> None:
        self.data, self.port, self.base = data, port, f"http://127.0.0.1:{port}"
        self.log_path = tmp / f"{name}.log"
        self.env = clean_env(data, AVATAR_SERVER_PORT=str(port), AVATAR_ENGINE_PROVISION_DELAY="fixed:0.3",
                             **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "avatar_server"], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if http_json(self.base + "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not start:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self, needle: str) -> list[str]:
        return [ln for ln in self.log().splitlines() if needle in ln]

    @property
    def token(self) -> str:
        return (self.data / "admin-token").read_text().strip()

    def call(self, path: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
             ) -> tuple[int, Any]:
        auth = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return http_json(self.base + path, method, body, auth)

    def connect(self, max_duration: int) -> dict[str, Any]:
        status, body = self.call("/v1/sessions/connect", "POST",
                                 {"avatarId": "cooking-teacher", "maxDuration": max_duration})
        assert status == 200, body
        return body

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def call_with_headers(url: str, token: str) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def running(tmp_path: Path) -> Any:
    servers: list[Server] = []
    yield servers
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            s.kill()
    # whatever happened, no redis-server is left on the test's data dirs
    for d in {s.data / "redis" for s in servers}:
        for pid in redis_servers(d):
            os.kill(pid, signal.SIGKILL)


# --- (a) the embedded Redis killed with sessions live ---------------------------------------


def test_killed_embedded_redis_comes_back_and_every_cap_fires(tmp_path: Path, running: list[Server]) -> None:
    server = Server(tmp_path, tmp_path / "data", free_port()).start()
    running.append(server)
    redis_dir = server.data / "redis"
    sessions = []
    for max_duration in (10, 11, 12):
        body = server.connect(max_duration)
        sessions.append((body["sessionId"], epoch(body["endsAt"])))
    first_ends_at = min(ends for _, ends in sessions)

    # kill it half a second before the first cap: that cap falls due while the store is away
    time.sleep(max(0.0, first_ends_at - 0.5 - time.time()))
    [redis_pid] = redis_servers(redis_dir)
    os.kill(redis_pid, signal.SIGKILL)
    killed_at = time.time()

    # while it is away (its restart waits a second): 503 store_unavailable + Retry-After, /readyz 503
    answers: dict[str, tuple[int, dict[str, str], str]] = {}

    def ask(name: str, path: str) -> None:
        answers[name] = call_with_headers(server.base + path, server.token)

    askers = [threading.Thread(target=ask, args=("api", f"/v1/sessions/{sessions[1][0]}")),
              threading.Thread(target=ask, args=("list", "/v1/sessions?status=active")),
              threading.Thread(target=ask, args=("readyz", "/readyz"))]
    for t in askers:
        t.start()
    for t in askers:
        t.join(30)
    for name in ("api", "list"):
        status, headers, text = answers[name]
        assert status == 503 and '"store_unavailable"' in text, (name, status, text)
        assert int(headers["Retry-After"]) >= 1
        assert "Traceback" not in text
    assert answers["readyz"][0] == 503 and '"redis": false' in answers["readyz"][2], answers["readyz"]

    # it comes back by itself: another redis-server on the same data dir, and the data with it
    wait_until(lambda: server.log_lines("store back after"), 15, "the store back")
    assert time.time() - killed_at < 10
    [new_pid] = redis_servers(redis_dir)
    assert new_pid != redis_pid
    assert http_json(server.base + "/readyz")[0] == 200
    for sid, _ in sessions:
        status, rec = server.call(f"/v1/sessions/{sid}")
        assert status == 200 and rec["id"] == sid, rec

    # every cap fires, within 5 s of its endsAt (the first one caught up once the store was back)
    for sid, ends_at in sessions:
        def ended(sid: str = sid) -> Any:
            status, rec = server.call(f"/v1/sessions/{sid}")
            return rec if status == 200 and rec["status"] == "ENDED" else None

        rec = wait_until(ended, max(1.0, ends_at + 8 - time.time()), f"session {sid} ended")
        assert rec["endReason"] == "cap", rec
        assert abs(epoch(rec["endsAt"]) - ends_at) < 0.01
        assert 0 <= epoch(rec["endedAt"]) - ends_at <= 5.0, rec

    # no upstream session left running
    def all_terminal() -> Any:
        status, listed = server.call("/engine/_control/sessions", headers=CONTROL_HEADERS)
        assert status == 200, listed
        return listed if listed and all(s["status"] in TERMINAL for s in listed) else None

    engine_sessions = wait_until(all_terminal, 5, "every engine session terminal")
    assert len(engine_sessions) == len(sessions)

    assert server.stop() == 0
    assert redis_servers(redis_dir) == []
    log = server.log()
    assert len(server.log_lines("store down:")) == 1, log
    assert len(server.log_lines("store back after")) == 1, log
    assert "SIGKILL" in server.log_lines("store down:")[0]
    assert "timer tick failed" not in log and "Traceback" not in log, log


def test_an_external_redis_outage_answers_503_and_is_logged_once(
    tmp_path: Path, running: list[Server]
) -> None:
    redis_port, redis_data = free_port(), tmp_path / "external-redis"
    redis_data.mkdir()

    def external_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(redis_data),
             "--appendonly", "yes", "--save", "", "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: redis_servers(redis_data) == [proc.pid], 10, "the external redis-server")
        return proc

    redis = external_redis()
    try:
        url = f"redis://127.0.0.1:{redis_port}/0"
        server = Server(tmp_path, tmp_path / "data", free_port(), REDIS_URL=url)
        running.append(server.start())
        sid = server.connect(60)["sessionId"]
        assert not (server.data / "avatar-server.lock").exists()  # REDIS_URL: the data dir is not locked

        redis.kill()
        redis.wait()
        status, headers, text = call_with_headers(f"{server.base}/v1/sessions/{sid}", server.token)
        assert status == 503 and '"store_unavailable"' in text, (status, text)
        assert headers["Retry-After"] == "2"
        assert http_json(server.base + "/readyz")[0] == 503
        wait_until(lambda: server.log_lines("store down:"), 10, "the outage logged")
        time.sleep(2)  # a while down: still one line

        redis = external_redis()  # the same Redis again, its data back from its append-only file
        wait_until(lambda: server.log_lines("store back after"), 10, "the recovery logged")
        status, rec = server.call(f"/v1/sessions/{sid}")
        assert status == 200 and rec["status"] == "RUNNING", rec
        server.call(f"/v1/sessions/{sid}", "DELETE")
        assert server.stop() == 0
        log = server.log()
        assert len(server.log_lines("store down:")) == 1, log
        assert len(server.log_lines("store back after")) == 1, log
        assert "timer tick failed" not in log and "Traceback" not in log, log
    finally:
        redis.kill()
        redis.wait()


# --- (b) one owner per data dir -------------------------------------------------------------


def test_a_second_server_or_engine_on_the_same_data_dir_exits_1_and_touches_nothing(
    tmp_path: Path, running: list[Server]
) -> None:
    first = Server(tmp_path, tmp_path / "data", free_port()).start()
    running.append(first)
    redis_dir = first.data / "redis"
    [redis_pid] = redis_servers(redis_dir)
    token_before = first.token
    files_before = sorted(p.name for p in first.data.iterdir())

    for port in (free_port(), first.port):  # another port, and the same one
        second = subprocess.run([sys.executable, "-m", "avatar_server"], capture_output=True, text=True,
                                env=clean_env(first.data, AVATAR_SERVER_PORT=str(port)), timeout=60)
        assert second.returncode == 1
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, second.stderr
        assert str(first.data) in lines[0] and "in use" in lines[0] and "Traceback" not in second.stderr
        assert not second.stdout.strip(), second.stdout

    engine = subprocess.run(
        [sys.executable, "-m", "avatar_server", "engine", "--port", str(free_port()),
         "--data-dir", str(first.data)],
        capture_output=True, text=True, env=clean_env(tmp_path / "other"), timeout=60)
    assert engine.returncode == 1
    lines = [ln for ln in engine.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "in use" in lines[0], engine.stderr

    # the first still serves, on the same redis-server, and nothing of its data dir changed
    assert redis_servers(redis_dir) == [redis_pid]
    assert first.token == token_before
    assert sorted(p.name for p in first.data.iterdir()) == files_before
    assert not (tmp_path / "other").exists()
    body = first.connect(10)
    first.call(f"/v1/sessions/{body['sessionId']}", "DELETE")
    assert first.stop() == 0
    assert redis_servers(redis_dir) == []


def test_an_engine_on_its_data_dir_is_one_owner_too(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path / "server-data")
    args = [sys.executable, "-m", "avatar_server", "engine", "--port", str(port), "--api-key", "k" * 24,
            "--data-dir", str(tmp_path / "engine-data")]
    with open(tmp_path / "engine.log", "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: redis_servers(tmp_path / "engine-data" / "redis"), 30, "the engine's redis-server")
        wait_until(lambda: "avatar-server engine on" in (tmp_path / "engine.log").read_text(), 30,
                   "the engine")
        again = subprocess.run([*args[:5], str(free_port()), *args[6:]], capture_output=True, text=True,
                               env=env, timeout=60)
        assert again.returncode == 1
        lines = [ln for ln in again.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "in use" in lines[0], again.stderr
        assert proc.poll() is None
        assert len(redis_servers(tmp_path / "engine-data" / "redis")) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert redis_servers(tmp_path / "engine-data" / "redis") == []


# --- (c) restarts after crashes ---------------------------------------------------------------


def test_restarts_after_kill_9_leave_exactly_one_redis_server(tmp_path: Path, running: list[Server]) -> None:
    data = tmp_path / "data"
    redis_dir = data / "redis"
    server = Server(tmp_path, data, free_port()).start()
    running.append(server)
    sid = server.connect(60)["sessionId"]

    for crash in range(2):  # the second crash is where two redis-servers used to pile up
        server.kill()  # kill -9 of the Python process alone
        server = Server(tmp_path, data, server.port, name=f"server{crash + 1}").start()
        running.append(server)
        assert len(redis_servers(redis_dir)) == 1, redis_servers(redis_dir)
        status, rec = server.call(f"/v1/sessions/{sid}")
        assert status == 200 and rec["id"] == sid  # same data

    # an orphaned redis-server still serving the data dir, its pidfile gone (as a crash on a system
    # without PR_SET_PDEATHSIG leaves it): the next owner stops it before starting its own
    server.kill()
    wait_until(lambda: not redis_servers(redis_dir), 10, "the killed server's redis-server gone")
    orphan = subprocess.Popen(
        ["redis-server", "--port", str(free_port()), "--bind", "127.0.0.1", "--dir", str(redis_dir),
         "--appendonly", "yes", "--appendfilename", "avatar-server.aof", "--save", "", "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: redis_servers(redis_dir) == [orphan.pid], 10, "the orphan serving the data dir")
        assert not (redis_dir / "redis.pid").exists()
        server = Server(tmp_path, data, server.port, name="server-after-orphan").start()
        running.append(server)
        assert orphan.wait(10) is not None  # stopped by the new owner
        servers = redis_servers(redis_dir)
        assert len(servers) == 1 and servers[0] != orphan.pid, servers
        status, rec = server.call(f"/v1/sessions/{sid}")
        assert status == 200 and rec["id"] == sid
        server.call(f"/v1/sessions/{sid}", "DELETE")
        assert server.stop() == 0
        assert redis_servers(redis_dir) == []
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


# --- the supervisor and close() -----------------------------------------------------------------


async def test_the_supervisor_restarts_it_but_never_after_close(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    redis_dir = tmp_path / "data" / "redis"
    embedded = EmbeddedRedis(redis_dir, lock=lock, restart_delay=0.3)
    await embedded.start()
    port, downs, ups = embedded.port, [], []

    async def on_port(_: int) -> None:
        raise AssertionError("the port was free: the restart must keep it")

    embedded.supervise(downs.append, ups.append, on_port)
    first = embedded.pid
    os.kill(first, signal.SIGKILL)
    for _ in range(200):
        if ups:
            break
        await asyncio.sleep(0.025)
    assert len(downs) == 1 and "SIGKILL" in downs[0] and len(ups) == 1, (downs, ups)
    assert embedded.pid != first and embedded.port == port and redis_servers(redis_dir) == [embedded.pid]

    # killed again, and closed while its restart waits: it stays down, and the lock is let go
    os.kill(embedded.pid, signal.SIGKILL)
    for _ in range(200):
        if len(downs) == 2:
            break
        await asyncio.sleep(0.025)
    await embedded.close()
    await asyncio.sleep(1.5)  # longer than the restart delay (doubled since the last crash)
    assert len(ups) == 1 and redis_servers(redis_dir) == []
    assert not lock.held
    await embedded.close()  # idempotent
    DataDirLock.check_free(tmp_path / "data")
