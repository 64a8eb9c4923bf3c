"""What every benchmark here shares: the project on ``sys.path``, percentiles, timestamps, a
process's CPU and memory from ``/proc``, waiting for an HTTP service, and the local engine's
control API (its counters: ``GET /_control/stats``)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VERSION = {"X-Runway-Version": "2024-11-06"}


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank); NaN for no values."""
    s = sorted(values)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def ts(value: str | None) -> float | None:
    """Epoch seconds of an ISO time as Runway and avatar_server write them (``…Z``); None stays None."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def proc_peak_rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM")


async def wait_http(url: str, timeout: float = 30) -> None:
    """Until ``url`` answers below 500 (or RuntimeError after ``timeout`` s)."""
    deadline = time.time() + timeout
    async with httpx.AsyncClient() as c:
        while time.time() < deadline:
            try:
                if (await c.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def engine_control(base: str, key: str, method: str, path: str, body: object = None) -> object:
    """A call to the engine's control API (``/_control/...``)."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}", **VERSION}) as c:
        r = await c.request(method, "/_control" + path, json=body)
        r.raise_for_status()
        return r.json() if r.content else None
