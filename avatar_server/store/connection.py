"""Opening Redis: an external one from ``REDIS_URL`` or the embedded one.

The handle owns two background tasks, ended by its idempotent ``close()`` (the app's
``_redis_ctx``): the store's health watch (``health.StoreHealth``: one log line when Redis goes
down, one when it is back) and, for the embedded Redis, its supervisor (restarts it if it dies).
With the embedded Redis the data dir is locked first (``ownership.DataDirLock``): one owner.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from ..errors import ConfigError
from .embedded import EmbeddedRedis
from .health import StoreHealth
from .ownership import DataDirLock

Redis = aioredis.Redis


class RedisHandle:
    """The process's Redis client (and the embedded server, if any). ``close()`` is idempotent."""

    def __init__(self, client: Redis, embedded: EmbeddedRedis | None) -> None:
        self.client = client
        self.embedded = embedded
        self.health = StoreHealth(self.ping)
        self._closed = False

    def start(self) -> None:
        """Start the health watch and, for the embedded Redis, its supervisor."""
        self.health.start()
        if self.embedded is not None:
            self.embedded.supervise(self.health.mark_down, self.health.mark_up, self._repoint)

    async def _repoint(self, port: int) -> None:
        """The embedded Redis came back on another port: the pool's connections follow it."""
        pool = self.client.connection_pool
        pool.connection_kwargs["port"] = port
        for attr in ("_available_connections", "_in_use_connections"):
            for conn in list(getattr(pool, attr, ())):
                conn.port = port
        with contextlib.suppress(RedisError, OSError):
            await pool.disconnect()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.health.close()
        if self.embedded is not None:
            await self.embedded.close()  # no restart from here on; its lock is let go last
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


POOL_SIZE = 256
POOL_WAIT = 10.0  # seconds a command waits for a free connection before it fails


def client_from_url(url: str) -> Redis:
    """A client whose pool *waits* (bounded) for a free connection instead of raising at once
    when every connection is busy (a flash crowd), so load becomes latency, not errors."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=15,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        # a dropped connection (Redis restarted) is retried on a fresh one; a Redis that stays
        # away fails the command within about a second (-> 503 store_unavailable)
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def pool_in_use(client: Redis) -> float:
    """Share of the pool's connections in use (0–1): a load signal for admission."""
    pool = client.connection_pool
    in_use = len(getattr(pool, "_in_use_connections", ()))
    return in_use / max(1, pool.max_connections)


async def open_redis(url: str | None, data_dir: Path) -> RedisHandle:
    """Connect and check with one PING; an unreachable Redis is a ``ConfigError`` (one clear line)."""
    embedded: EmbeddedRedis | None = None
    if url is None:
        lock = DataDirLock(data_dir)
        lock.acquire()  # another process owns this data dir: ConfigError, and nothing touched
        embedded = EmbeddedRedis(data_dir / "redis", lock=lock)
        try:
            url = await embedded.start()
        except BaseException:
            await embedded.close()
            raise
    client = client_from_url(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        with contextlib.suppress(Exception):
            await client.aclose()
        if embedded is not None:
            await embedded.close()
        where = "the embedded Redis" if embedded else "REDIS_URL"
        raise ConfigError(f"{where} is not reachable: {type(exc).__name__}: {exc}") from None
    handle = RedisHandle(client, embedded)
    handle.start()
    return handle
