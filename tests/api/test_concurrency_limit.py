"""maxConcurrentSessions holds under parallel starts, on one instance and across two sharing Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from avatar_server.appkeys import SITES
from avatar_server.store import keys
from avatar_server.store.sessions import SessionStore

from ..harness import ServerHarness, assert_no_leaks, fast_engine_config, make_settings

ORIGIN = "https://shop.example.com"
BODY = {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}}


@pytest.fixture
async def busy_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """A server whose engine takes 3 s to provision (so starts overlap) and no per-visitor limit."""
    s = replace(make_settings(data_dir, redis_url), start_rate_per_minute=0)
    h = await ServerHarness(s, fast_engine_config()).start()
    await h.control("PATCH", "/config", {"provisioningDelay": "fixed:3"})
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def _site(h: ServerHarness, limit: int) -> dict:
    status, site = await h.admin("POST", "/v1/sites", {"name": "s", "allowedOrigins": [ORIGIN],
                                                       "avatarIds": ["cooking-teacher"],
                                                       "maxConcurrentSessions": limit})
    assert status == 201, site
    return site


async def _start(h: ServerHarness, key: str) -> tuple[int, dict, dict]:
    status, body, headers = await h.call("POST", "/v1/sessions", token=key, json_body=BODY,
                                         headers={"Origin": ORIGIN})
    return status, body, dict(headers)


async def test_fifty_parallel_starts_admit_exactly_three(busy_server: ServerHarness) -> None:
    h = busy_server
    site = await _site(h, 3)
    results = await asyncio.gather(*(_start(h, site["publishableKey"]) for _ in range(50)))
    statuses = Counter(r[0] for r in results)
    assert statuses == {201: 3, 429: 47}, statuses
    for status, body, headers in results:
        if status == 429:
            assert body["error"]["code"] == "concurrency_limit"
            assert body["error"]["limit"] == 3 and body["error"]["active"] == 3
            assert int(headers["Retry-After"]) >= 1
    admitted = [body["id"] for status, body, _ in results if status == 201]
    for sid in admitted:
        rec = await h.wait_for(sid, lambda r: True)
        assert rec["status"] == "PROVISIONING"
    # only the admitted ones ever reached the upstream
    assert len(await h.control("GET", "/sessions")) == 3
    status, got = await h.admin("GET", f"/v1/sites/{site['id']}")
    assert got["activeSessions"] == 3
    # ending one frees exactly one slot
    status, _ = await h.admin("DELETE", f"/v1/sessions/{admitted[0]}")
    assert status == 200
    again = await asyncio.gather(*(_start(h, site["publishableKey"]) for _ in range(5)))
    assert Counter(r[0] for r in again) == {201: 1, 429: 4}
    admitted += [body["id"] for status, body, _ in again if status == 201]
    for sid in admitted:
        await h.admin("DELETE", f"/v1/sessions/{sid}")
    status, got = await h.admin("GET", f"/v1/sites/{site['id']}")
    assert got["activeSessions"] == 0


async def test_limit_holds_across_two_instances(busy_server: ServerHarness, data_dir: Path, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    settings = replace(make_settings(other_dir, busy_server.settings.redis_url), start_rate_per_minute=0)
    other = await ServerHarness(settings, fast_engine_config()).start()
    try:
        await other.control("PATCH", "/config", {"provisioningDelay": "fixed:3"})
        site = await _site(busy_server, 2)
        instances = [h for _ in range(15) for h in (busy_server, other)]
        results = await asyncio.gather(*(_start(h, site["publishableKey"]) for h in instances))
        assert Counter(r[0] for r in results) == {201: 2, 429: 28}
        # each instance has its own embedded engine here, so each ends what it started
        for h, (status, body, _) in zip(instances, results, strict=True):
            if status == 201:
                await h.admin("DELETE", f"/v1/sessions/{body['id']}")
        await assert_no_leaks(other, None, other.control)
    finally:
        await other.stop_all()


async def test_a_failure_after_admission_gives_the_slot_back(
    busy_server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = busy_server
    site = await _site(h, 1)
    real_create = SessionStore.create
    calls = 0

    async def failing_create(self: SessionStore, *args: object, **kw: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("injected: Redis went away while storing the session")
        await real_create(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SessionStore, "create", failing_create)
    status, body, _ = await _start(h, site["publishableKey"])
    assert status == 503 and body["error"]["code"] == "store_unavailable"
    status, got = await h.admin("GET", f"/v1/sites/{site['id']}")
    assert got["activeSessions"] == 0
    status, body, _ = await _start(h, site["publishableKey"])
    assert status == 201, body
    await h.admin("DELETE", f"/v1/sessions/{body['id']}")


async def test_a_slot_orphaned_by_a_dead_instance_is_freed(busy_server: ServerHarness) -> None:
    """An instance that dies between admission and storing the record leaves a slot with no
    session behind it; once its admission claim has expired, the next start at the limit frees it."""
    h = busy_server
    site = await _site(h, 2)
    sites = h.app[SITES]
    assert await sites.admit(site["id"], "dead-1", 2) == (True, 1)  # the instance died right after this
    status, first, _ = await _start(h, site["publishableKey"])
    assert status == 201, first
    # while the dead instance's claim is young, the slot stays taken: it may still be storing
    status, body, _ = await _start(h, site["publishableKey"])
    assert status == 429 and body["error"]["active"] == 2, body
    await sites.r.delete(keys.session_admission("dead-1"))  # the claim's TTL runs out
    status, second, _ = await _start(h, site["publishableKey"])
    assert status == 201, second
    assert set(await sites.active_ids(site["id"])) == {first["id"], second["id"]}
    for sid in (first["id"], second["id"]):
        await h.admin("DELETE", f"/v1/sessions/{sid}")
