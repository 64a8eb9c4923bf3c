"""The process stack the load benchmarks run against, all on 127.0.0.1.

  * the local engine alone (``avatar-server engine``), its own embedded Redis in the temp dir,
  * avatar_server in Runway mode pointed at it (its own process: its CPU and memory are its own),
  * the server's own Redis (embedded, not persisted).

Every process gets a temp dir of its own, dies with this one (``PR_SET_PDEATHSIG``) and is
stopped (SIGTERM, then SIGKILL) by ``close()``, which also removes the temp dir — after
copying the server's and the engine's stderr logs to ``logs_dir`` when one is given. The
environment of the children is this one minus every ``AVATAR_*``/``RUNWAYML_*``/``REDIS_URL``
variable, plus what the benchmark sets, so a developer's shell cannot change a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from measure import ROOT, wait_http  # noqa: F401  (importing measure puts the project on sys.path)

from avatar_server.store.embedded import EmbeddedRedis, free_port  # noqa: E402

_PR_SET_PDEATHSIG = 1
# how the server is started (a diagnostic script may put a wrapper here)
SERVER_CMD = [sys.executable, "-m", "avatar_server"]


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AVATAR_", "RUNWAYML_")) and k != "REDIS_URL"}


class Stack:
    def __init__(self, *, prefix: str, engine_env: dict[str, str], server_env: dict[str, str],
                 logs_dir: Path | None = None, log_name: str = "run") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.engine_env = engine_env
        self.server_env = server_env
        self.logs_dir = logs_dir
        self.log_name = log_name
        self.key = "sk_bench_" + secrets.token_hex(16)
        self.admin = "adm_bench_" + secrets.token_hex(16)
        self.redis: EmbeddedRedis | None = None
        self.engine: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.engine_base = self.server_base = ""
        self.server_log = self.tmp / "server.log"
        self.engine_log = self.tmp / "engine.log"

    async def start(self) -> None:
        self.redis = EmbeddedRedis(self.tmp / "redis", persist=False)
        redis_url = await self.redis.start()
        eport, sport = free_port(), free_port()
        self.engine_base, self.server_base = f"http://127.0.0.1:{eport}", f"http://127.0.0.1:{sport}"
        base = clean_env()
        if CODE is not None:
            base["PYTHONPATH"] = str(CODE.dir)
        self.engine = subprocess.Popen(
            [sys.executable, "-m", "avatar_server", "engine", "--port", str(eport), "--api-key", self.key,
             "--data-dir", str(self.tmp / "engine")],
            env={**base, "AVATAR_SERVER_LOG_LEVEL": "WARNING", **self.engine_env}, cwd=self.tmp,
            stdout=subprocess.DEVNULL, stderr=self.engine_log.open("wb"), preexec_fn=_die_with_parent)
        self.server = subprocess.Popen(
            SERVER_CMD,
            env={**base, "RUNWAYML_API_SECRET": self.key, "RUNWAYML_BASE_URL": self.engine_base,
                 "REDIS_URL": redis_url, "AVATAR_SERVER_PORT": str(sport), "AVATAR_SERVER_ADMIN_TOKEN": self.admin,
                 "AVATAR_SERVER_DATA_DIR": str(self.tmp / "data"), "AVATAR_SERVER_LOG_LEVEL": "WARNING",
                 **self.server_env},
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=self.server_log.open("wb"),
            preexec_fn=_die_with_parent)
        await wait_http(self.engine_base + "/v1/realtime_sessions/x")
        await wait_http(self.server_base + "/healthz")

    def alive(self) -> dict[str, int | None]:
        return {"server": self.server.poll() if self.server else None,
                "engine": self.engine.poll() if self.engine else None}

    @property
    def redis_pid(self) -> int | None:
        return self.redis.pid if self.redis else None

    def log_summary(self, which: str = "server") -> dict[str, object]:
        """Counts of WARNING/ERROR/CRITICAL lines and tracebacks, and the distinct messages (first 8)."""
        path = self.server_log if which == "server" else self.engine_log
        text = path.read_text(errors="replace") if path.exists() else ""
        levels: Counter[str] = Counter()
        distinct: Counter[str] = Counter()
        for line in text.splitlines():
            m = re.match(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\s+(\S+): (.*?)( \[.*)?$", line)
            if m:
                levels[m.group(1)] += 1
                distinct[f"{m.group(1)} {m.group(2)}: {m.group(3)}"] += 1
        return {"levels": dict(levels), "tracebacks": text.count("Traceback (most recent call last)"),
                "distinct": distinct.most_common(8), "bytes": len(text)}

    async def close(self) -> None:
        for p in (self.server, self.engine):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.server, self.engine):
            if p is None:
                continue
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.close()
        if self.logs_dir is not None:
            with contextlib.suppress(OSError):
                self.logs_dir.mkdir(parents=True, exist_ok=True)
                stamp = time.strftime("%H%M%S")
                for log in (self.server_log, self.engine_log):
                    if log.exists():
                        shutil.copy(log, self.logs_dir / f"{self.log_name}-{stamp}-{log.name}")
        shutil.rmtree(self.tmp, ignore_errors=True)


class CodeSnapshot:
    """The committed code (HEAD's avatar_server/ and web/), extracted once into a temp dir that the
    server and the engine import first (PYTHONPATH): every run of a benchmark measures the same
    commit, even while others commit or edit files in the working tree."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="avatar-bench-code-"))
        self.commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout.strip()
        archive = subprocess.run(["git", "archive", self.commit, "avatar_server", "web"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(self.dir)], input=archive, check=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


CODE: CodeSnapshot | None = None  # the code a benchmark's processes run (set by ``pinned_code``)


@contextlib.contextmanager
def pinned_code() -> Iterator[CodeSnapshot]:
    """Every process started inside runs one snapshot of HEAD's code (``CodeSnapshot``)."""
    global CODE
    CODE = CodeSnapshot()
    try:
        yield CODE
    finally:
        CODE.close()
        CODE = None
