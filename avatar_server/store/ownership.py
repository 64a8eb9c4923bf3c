"""One owner per data dir: an OS lock held for the owner's life, and no orphaned redis-server.

The process that runs the embedded Redis of a data dir holds ``<data dir>/avatar-server.lock``
(``fcntl.flock``, exclusive) until it stops; the kernel lets it go when the process dies, however
it dies. A second server or engine on the same data dir is refused at start with one line and
touches nothing. The owner, holding the lock, then stops any redis-server still serving the
directory — an orphan of a crashed owner, found through the pidfile *and* ``/proc`` (the
process's command line names redis-server and its working directory, which redis-server takes
from ``--dir``, is this one) — before it starts its own, so one data dir never has two.

With ``REDIS_URL`` nothing is locked: the data dir then holds only the admin token (created
with ``O_EXCL``), and several instances may share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from ..errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (the server targets Linux and macOS)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "avatar-server.lock"
PROC = Path("/proc")


def _in_use(data_dir: Path, fd: int) -> ConfigError:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        pid = int(os.read(fd, 32).decode().strip() or "0")
        if pid:
            return ConfigError(f"the data dir {data_dir} is in use by another avatar-server (pid {pid}); "
                               "stop it, or give this one another data dir")
    return ConfigError(f"the data dir {data_dir} is in use by another avatar-server; "
                       "stop it, or give this one another data dir")


class DataDirLock:
    """The exclusive lock on a data dir, held from ``acquire()`` to ``release()`` (or the process's end)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise ``ConfigError`` (one line) when another process holds it."""
        if self._fd is not None or fcntl is None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"the data dir {self.data_dir} is not writable: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            err = _in_use(self.data_dir, fd)
            os.close(fd)
            raise err from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd  # never inherited (O_CLOEXEC), so a redis-server child does not keep it

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # the file stays: deleting a lock file races with the next owner

    @staticmethod
    def check_free(data_dir: Path) -> None:
        """Raise ``ConfigError`` if another process owns ``data_dir``; take nothing, create nothing."""
        if fcntl is None:
            return
        try:
            fd = os.open(Path(data_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no lock file (a fresh data dir) or not readable: acquire() decides
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise _in_use(Path(data_dir), fd) from None
        finally:
            os.close(fd)  # closing drops the probe's lock, if it got one


# --- redis-server processes serving a directory ------------------------------------------


def _is_redis_server(pid: int) -> bool:
    try:
        argv0 = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    # redis-server rewrites its title ("/usr/bin/redis-server 127.0.0.1:6379"): the program is
    # the first word
    words = argv0.split()
    return bool(words) and os.path.basename(words[0]).startswith(b"redis-server")


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent to reap it)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        if PROC.is_dir():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[-1].split()[0:1]
    return state != ["Z"] and state != ["X"]


def _serves(pid: int, directory: Path) -> bool:
    try:
        return Path(os.readlink(PROC / str(pid) / "cwd")) == directory
    except OSError:
        return False


def redis_servers_serving(directory: Path) -> list[int]:
    """Pids of the live redis-server processes whose working directory is ``directory``.

    Found through the pidfile and a scan of ``/proc``, each one checked on its command line
    and working directory. Without ``/proc`` (macOS) only the pidfile is believed."""
    directory = Path(directory).resolve()
    candidates: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        candidates.add(int((directory / "redis.pid").read_text().strip()))
    if not PROC.is_dir():
        return sorted(p for p in candidates if p > 0 and p != os.getpid() and _alive(p))
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            candidates.add(int(entry.name))
    return sorted(
        pid for pid in candidates
        if pid > 0 and pid != os.getpid()
        and _is_redis_server(pid) and _serves(pid, directory) and _alive(pid)
    )


async def _gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def stop_orphans(directory: Path, timeout: float = 10.0) -> list[int]:
    """Stop every redis-server still serving ``directory`` (call only while holding its lock).

    SIGTERM (redis-server flushes its append-only file), then SIGKILL after ``timeout``; returns
    when they are gone. Returns their pids."""
    pids = redis_servers_serving(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    if not await _gone(pids, timeout):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        await _gone(pids, 5.0)
    if pids:
        with contextlib.suppress(OSError):
            (Path(directory) / "redis.pid").unlink()
    return pids
