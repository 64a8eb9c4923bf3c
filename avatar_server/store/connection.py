"""Opening Redis: an external one from ``REDIS_URL`` or the embedded one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..errors import ConfigError
from .embedded import EmbeddedRedis

Redis = aioredis.Redis


class RedisHandle:
    """The process's Redis client (and the embedded server, if any). ``close()`` is idempotent."""

    def __init__(self, client: Redis, embedded: EmbeddedRedis | None) -> None:
        self.client = client
        self.embedded = embedded
        self._closed = False

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
        if self.embedded is not None:
            await self.embedded.close()


def client_from_url(url: str) -> Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=15,
        max_connections=256,
    )


async def open_redis(url: str | None, data_dir: Path) -> RedisHandle:
    """Connect and check with one PING; an unreachable Redis is a ``ConfigError`` (one clear line)."""
    embedded: EmbeddedRedis | None = None
    if url is None:
        embedded = EmbeddedRedis(data_dir / "redis")
        url = await embedded.start()
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
    return RedisHandle(client, embedded)
