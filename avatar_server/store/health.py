"""Whether the store answers.

- ``store_unavailable(exc)`` is the one place redis-py's connection and timeout errors (Redis
  down, restarting, still loading its data) become ``StoreUnavailable`` (503
  ``store_unavailable`` with ``Retry-After``); the API's error middleware and the timer loop use it.
  ``store_failure(exc)`` says the same of *any* error of Redis or its socket, for a caller that
  fails closed whatever went wrong (CORS): so no module outside ``store/`` knows redis-py.
- ``StoreHealth`` says an outage once: one WARNING line when the store goes down and one when it
  is back (with how long it was away), however many requests, ticks and retries fail meanwhile.
  It learns of an outage from its own PING (every second; every 0.25 s while down) and from the
  embedded Redis's supervisor (at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreUnavailable

log = logging.getLogger("avatar_server.store")

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)  # any failure of a store call
RETRY_AFTER = 2  # seconds: the embedded Redis is back within about one (see embedded.RESTART_DELAY)
WATCH_EVERY = 1.0
WATCH_EVERY_DOWN = 0.25
PING_TIMEOUT = 3.0


def store_unavailable(exc: BaseException) -> StoreUnavailable | None:
    """``StoreUnavailable`` for an error that means "Redis does not answer", else None."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, OUTAGE_ERRORS):
        return StoreUnavailable(retry_after=RETRY_AFTER)
    return None


def store_failure(exc: BaseException) -> StoreUnavailable | None:
    """``StoreUnavailable`` for any error of the store (an outage, or any other error of Redis or of
    its socket), else None."""
    if isinstance(exc, STORE_ERRORS):
        return store_unavailable(exc) or StoreUnavailable(retry_after=RETRY_AFTER)
    return store_unavailable(exc)


class StoreHealth:
    """The store's state as this process sees it; logs each change once. ``close()`` is idempotent."""

    def __init__(self, ping: Callable[[], Awaitable[bool]]) -> None:
        self._ping = ping
        self.available = True
        self.outages = 0
        self._down_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._watch(), name="store-health")

    def mark_down(self, reason: str) -> None:
        if self._closed or not self.available:
            return
        self.available = False
        self.outages += 1
        self._down_at = time.monotonic()
        log.warning("store down: %s; API calls answer 503 store_unavailable until it is back", reason)

    def mark_up(self, how: str = "it answers again") -> None:
        if self._closed or self.available:
            return
        self.available = True
        log.warning("store back after %.1f s: %s", time.monotonic() - self._down_at, how)

    async def _watch(self) -> None:
        while not self._closed:
            try:
                ok = await asyncio.wait_for(self._ping(), PING_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a ping that fails in any way is "does not answer"
                ok = False
            if ok:
                self.mark_up()
            else:
                self.mark_down("Redis does not answer")
            await asyncio.sleep(WATCH_EVERY if self.available else WATCH_EVERY_DOWN)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
