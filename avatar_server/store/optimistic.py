"""The optimistic-transaction retry loop (WATCH, read, MULTI/EXEC; again if a watched key changed).

``body(p)`` gets a fresh transactional pipeline each attempt: it WATCHes and reads what it needs,
may return early (nothing written), or calls ``p.multi()``, queues the writes and ``await
p.execute()``. A ``WatchError`` from any of that starts a new attempt; after ``retries`` lost
attempts ``busy()`` is raised. Any other exception from ``body`` leaves the loop as it is.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import WatchError

from .connection import Redis

T = TypeVar("T")


async def optimistic(
    redis: Redis, body: Callable[[Any], Awaitable[T]], *, busy: Callable[[], Exception], retries: int
) -> T:
    for _ in range(retries):
        async with redis.pipeline(transaction=True) as p:
            try:
                return await body(p)
            except WatchError:
                continue
    raise busy()


async def watch_json(p: Any, key: str) -> Any:
    """WATCH ``key`` and read its JSON value (None if there is none): the usual first step of a ``body``."""
    await p.watch(key)
    raw = await p.get(key)
    return json.loads(raw) if raw else None
