"""An embedded Redis: a ``redis-server`` child process whose data lives in the data dir.

Used when ``REDIS_URL`` is unset (the embedded default) and by the test suite, which
starts one per test session. Data survives a restart (append-only file, fsync every
second). It listens on 127.0.0.1 only, on a free port, behind a generated password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
from pathlib import Path

from ..errors import ConfigError

INSTALL_HINT = (
    "the embedded Redis needs the redis-server program "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or set REDIS_URL"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, persist: bool = True, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.persist = persist
        self.binary = binary or shutil.which("redis-server") or ""
        self.port = 0
        self._password = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    def _stop_stale(self) -> None:
        pidfile = self.data_dir / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b"redis-server"  # no /proc (macOS): trust the pidfile
        if b"redis-server" in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()

    async def start(self) -> str:
        if self._proc is not None:
            raise RuntimeError("embedded Redis already started")
        if not self.binary:
            raise ConfigError(INSTALL_HINT)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"AVATAR_SERVER_DATA_DIR={self.data_dir} is not writable: {exc}") from None
        self._stop_stale()
        self._password = secrets.token_hex(24)
        args = [
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
        ]
        for _attempt in range(5):
            self.port = free_port()
            proc = await asyncio.create_subprocess_exec(
                *args, "--port", str(self.port), "--requirepass", self._password,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            if await self._wait_ready(proc):
                self._proc = proc
                return self.url
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        raise ConfigError(f"the embedded Redis ({self.binary}) did not start in {self.data_dir}")

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> bool:
        for _ in range(200):
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
            if b"LOADING" in data or not data:
                await asyncio.sleep(0.025)
                continue
            return False
        return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
