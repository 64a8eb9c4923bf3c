"""An embedded Redis: a ``redis-server`` child process whose data lives in the data dir.

Used when ``REDIS_URL`` is unset (the embedded default); ``bench/`` also starts one directly.
Data survives a restart (append-only file, fsync every second). It listens on 127.0.0.1 only,
on a free port, behind a generated password.

- One owner: ``open_redis`` takes the data dir's lock (``ownership.DataDirLock``) and hands it
  here; ``start()`` first stops any redis-server still serving the directory (the orphan of a
  crashed owner), and ``close()`` lets the lock go only once its own redis-server has exited.
- The child runs in its own session (a Ctrl-C on the terminal reaches the server, which stops
  it in order) and, on Linux, is sent SIGTERM when the server dies (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of the server leaves no redis-server behind.
- ``supervise()`` restarts it if it dies while the server runs: after ``RESTART_DELAY`` (doubling
  up to ``MAX_RESTART_DELAY`` while it keeps failing), on the same port, password and directory,
  so the client reconnects by itself and the append-only file brings the data back. Never
  after ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..errors import ConfigError
from .ownership import DataDirLock, stop_orphans

INSTALL_HINT = (
    "the embedded Redis needs the redis-server program "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or set REDIS_URL"
)

RESTART_DELAY = 1.0  # first restart after a crash: lets the dead process's port and files go
MAX_RESTART_DELAY = 15.0
STABLE_AFTER = 30.0  # a restart that then runs this long resets the delay
PORT_TRIES = 3  # restarts on the same port before another is taken (the client is repointed)
READY_WITHIN = 10.0  # seconds to answer PING (longer while it reports LOADING)

_PR_SET_PDEATHSIG = 1

log = logging.getLogger("avatar_server.store")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    term = ctypes.c_ulong(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, term)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


class EmbeddedRedis:
    def __init__(
        self, data_dir: Path, *, persist: bool = True, binary: str | None = None,
        lock: DataDirLock | None = None, restart_delay: float = RESTART_DELAY,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.persist = persist
        self.binary = binary or shutil.which("redis-server") or ""
        self.lock = lock
        self.restart_delay = restart_delay
        self.port = 0
        self.restarts = 0
        self._password = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _args(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()),
            "--pidfile", str((self.data_dir / "redis.pid").resolve()),
            "--daemonize", "no",
            "--logfile", "",
            "--loglevel", "warning",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
            "--appendfilename", "avatar-server.aof",
            "--port", str(self.port),
            "--requirepass", self._password,
        ]

    async def start(self) -> str:
        if self._proc is not None or self._closed:
            raise RuntimeError("embedded Redis already started")
        if not self.binary:
            raise ConfigError(INSTALL_HINT)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"AVATAR_SERVER_DATA_DIR={self.data_dir} is not writable: {exc}") from None
        await stop_orphans(self.data_dir)  # a crashed owner's redis-server must not run beside ours
        self._password = secrets.token_hex(24)
        for _attempt in range(5):
            self.port = free_port()
            if await self._spawn():
                return self.url
        raise ConfigError(f"the embedded Redis ({self.binary}) did not start in {self.data_dir}")

    async def _spawn(self) -> bool:
        """Start redis-server on ``self.port``; True once it answers. The process is ``self._proc``
        from the moment it exists, so ``close()`` stops it even if this is cancelled half-way."""
        proc = await asyncio.create_subprocess_exec(
            *self._args(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        self._proc = proc
        if await self._wait_ready(proc):
            self._started_at = time.monotonic()
            return True
        self._proc = None
        await _kill(proc)
        return False

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                return False
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.025)
                continue
            try:
                writer.write(f"AUTH {self._password}\r\nPING\r\n".encode())
                await writer.drain()
                data = await asyncio.wait_for(reader.read(64), 1.0)
            except (OSError, TimeoutError):
                data = b""
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if b"PONG" in data:
                return True
            if b"LOADING" in data:
                deadline = max(deadline, time.monotonic() + 1.0)  # a large file: as long as it loads
            elif data:
                return False
            await asyncio.sleep(0.025)
        return False

    # --- supervision ----------------------------------------------------------------------

    def supervise(
        self, on_down: Callable[[str], None], on_up: Callable[[str], None],
        on_port: Callable[[int], Awaitable[None]],
    ) -> None:
        """Watch the child and restart it when it dies (a background task; ``close()`` ends it).

        ``on_down``/``on_up`` report the outage; ``on_port`` is awaited when the old port was
        taken meanwhile and the restart had to use another one (the client must follow)."""
        if self._supervisor is None and self._proc is not None and not self._closed:
            self._supervisor = asyncio.create_task(self._supervise(on_down, on_up, on_port),
                                                   name="embedded-redis-supervisor")

    async def _supervise(
        self, on_down: Callable[[str], None], on_up: Callable[[str], None],
        on_port: Callable[[int], Awaitable[None]],
    ) -> None:
        delay = self.restart_delay
        while not self._closed and self._proc is not None:
            proc = self._proc
            code = await proc.wait()
            if self._closed:
                return
            self._proc = None
            if time.monotonic() - self._started_at >= STABLE_AFTER:
                delay = self.restart_delay
            on_down(f"the embedded Redis (pid {proc.pid}) {_exit_text(code)}; restarting it in {delay:g} s")
            tries = 0
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                if self._closed:
                    return
                tries += 1
                moved = tries > PORT_TRIES and _port_taken(self.port)
                if moved:
                    self.port = free_port()
                if await self._spawn():
                    break
                log.warning("the embedded Redis did not restart in %s (attempt %d); next attempt in %g s",
                            self.data_dir, tries, delay)
            self.restarts += 1
            if moved:
                await on_port(self.port)
            on_up(f"the embedded Redis restarted (pid {self.pid}, port {self.port}, same data)")

    async def close(self) -> None:
        """Stop supervising, stop the child (SIGTERM: it flushes its file), then let the lock go."""
        if self._closed:
            return
        self._closed = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    await _kill(proc)
        finally:
            if self.lock is not None:
                self.lock.release()
