"""Is this instance overloaded? Event-loop lag and saturated pools, measured all the time.

A start that arrives while the instance is overloaded is refused at once (503
``server_busy`` with ``Retry-After``) rather than admitted and failed later. The lag is the
median delay of a 100 ms heartbeat over the last second; the pools are the Redis
connection pool and the upstream HTTP client's connections, sampled at each heartbeat. A pool
counts as saturated when it was fully in use at most of the last second's beats: a pool that
fills for an instant during a ramp only makes a few requests wait their turn, and refusing
starts for it turned away thousands of starts the instance could take (the 1,000-session bench).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from ..errors import ServerBusy

BEAT = 0.1
WINDOW = 1.0
POOL_BUSY = 1.0  # a pool is saturated when every connection is in use (the next request would wait)


class LoadMonitor:
    def __init__(self, *, max_lag: float, pools: dict[str, Callable[[], float]] | None = None) -> None:
        self.max_lag = max_lag
        self.pools = dict(pools or {})
        self._lags: deque[tuple[float, float]] = deque()
        self._full: dict[str, deque[tuple[float, bool]]] = {name: deque() for name in self.pools}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.refused = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._beat(), name="load-monitor")

    async def _beat(self) -> None:
        while not self._closed:
            before = time.monotonic()
            await asyncio.sleep(BEAT)
            now = time.monotonic()
            self._lags.append((now, max(0.0, now - before - BEAT)))
            while self._lags and self._lags[0][0] < now - WINDOW:
                self._lags.popleft()
            for name, share in self.pools.items():
                samples = self._full[name]
                samples.append((now, share() >= POOL_BUSY))
                while samples and samples[0][0] < now - WINDOW:
                    samples.popleft()

    @property
    def lag(self) -> float:
        """The median lateness of the heartbeats of the last second: a loop that is *behind*, not
        one that hiccuped once (a single long block still shows: it is then the only beat)."""
        lags = sorted(lag for _, lag in self._lags)
        return lags[len(lags) // 2] if lags else 0.0

    def busy_reason(self) -> str | None:
        if self.lag > self.max_lag:
            return f"event loop lagging {self.lag:.2f} s"
        for name, samples in self._full.items():
            if samples and sum(full for _, full in samples) * 2 > len(samples):
                return f"{name} pool saturated"
        return None

    def check(self) -> None:
        """Raise ``ServerBusy`` if this instance should take no new start now."""
        reason = self.busy_reason()
        if reason is not None:
            self.refused += 1
            raise ServerBusy(f"the server is busy ({reason}); please try again shortly", retry_after=2.0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
