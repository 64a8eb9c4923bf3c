"""The shared optimistic-transaction loop (store/optimistic.py) and the busy errors of its users."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from avatar_server.engine.store import CatalogBusy, EngineCatalogStore, document_key
from avatar_server.errors import Conflict
from avatar_server.store import keys
from avatar_server.store.optimistic import optimistic
from avatar_server.store.sites import SiteStore


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_lost_watch_is_retried_and_the_result_returned(r: aioredis.Redis, redis_url: str) -> None:
    other = redis_sync.Redis.from_url(redis_url)
    attempts = 0

    async def body(p: Any) -> str:
        nonlocal attempts
        attempts += 1
        await p.watch("k")
        if attempts == 1:
            other.set("k", "meanwhile")  # someone else writes between our WATCH and EXEC
        p.multi()
        p.set("k", f"ours-{attempts}")
        await p.execute()
        return "done"

    assert await optimistic(r, body, busy=lambda: RuntimeError("busy"), retries=5) == "done"
    assert attempts == 2
    assert await r.get("k") == "ours-2"
    other.close()


async def test_busy_after_every_attempt_lost_and_nothing_written(r: aioredis.Redis, redis_url: str) -> None:
    other = redis_sync.Redis.from_url(redis_url)
    attempts = 0

    async def body(p: Any) -> None:
        nonlocal attempts
        attempts += 1
        await p.watch("k")
        other.set("k", f"theirs-{attempts}")
        p.multi()
        p.set("k", "ours")
        await p.execute()

    with pytest.raises(RuntimeError, match="busy"):
        await optimistic(r, body, busy=lambda: RuntimeError("busy"), retries=3)
    assert attempts == 3
    assert await r.get("k") == "theirs-3"
    other.close()


async def test_engine_catalog_raises_catalog_busy(r: aioredis.Redis, redis_url: str) -> None:
    store = EngineCatalogStore(r)
    await store.create_document({"id": "d1", "name": "n", "content": "c", "createdAt": 1, "updatedAt": 1})
    other = redis_sync.Redis.from_url(redis_url)

    def change(old: dict[str, Any]) -> dict[str, Any]:
        other.set(document_key("d1"), json.dumps({**old, "name": "theirs"}))
        return {**old, "name": "ours", "updatedAt": 2}

    with pytest.raises(CatalogBusy):
        await store.update_document("d1", change)
    assert (await store.get_document("d1"))["name"] == "theirs"
    assert await store.update_document("missing", change) is None
    other.close()


async def test_site_store_raises_site_busy(r: aioredis.Redis, redis_url: str) -> None:
    store = SiteStore(r)
    site = await store.create({"name": "s", "allowedOrigins": ["https://a.example"], "avatarIds": [],
                               "maxConcurrentSessions": 1})
    other = redis_sync.Redis.from_url(redis_url)

    def change(old: dict[str, Any]) -> dict[str, Any]:
        other.set(keys.site(site.id), json.dumps({**old, "name": "theirs"}))
        return {**old, "name": "ours"}

    with pytest.raises(Conflict) as caught:
        await store._modify(site.id, change)
    assert caught.value.code == "site_busy"
    other.close()
