"""The waiting room: real Redis, the engine over real HTTP, real signal sockets.

With ``upstream_concurrency`` set, no more upstream sessions live than that; further starts
wait in the room and are served sites in turn (round-robin), first come first served within
a site, admin starts in a lane of their own. Places shown never rise; a wait that reaches the
provisioning deadline ends ``queue_timeout``; a full room refuses with 503 ``server_busy``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..harness import (
    ENGINE_KEY,
    EngineHarness,
    ServerHarness,
    assert_no_leaks,
    fast_engine_config,
    make_settings,
    upstream_final,
)

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


async def room_server(data_dir: Path, redis_url: str, **kw: Any) -> ServerHarness:
    settings = make_settings(data_dir, redis_url, start_rate_per_minute=0, **kw)
    return await ServerHarness(settings, fast_engine_config()).start()


@pytest.fixture
async def room(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    h = await room_server(data_dir, redis_url, upstream_concurrency=1)
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
        await assert_upstream_never_over(h, 1)
    finally:
        await h.stop_all()


async def assert_upstream_never_over(h: ServerHarness | EngineHarness, limit: int) -> None:
    """The engine counts the most upstream sessions it held alive at once (since the test began)."""
    stats = await h.control("GET", "/stats")
    assert 0 < stats["peakAlive"] <= limit, stats


async def make_site(h: ServerHarness, origin: str) -> str:
    status, site = await h.admin("POST", "/v1/sites", {
        "name": origin, "allowedOrigins": [origin], "avatarIds": ["cooking-teacher"], "maxConcurrentSessions": 50,
    })
    assert status == 201, site
    return site["publishableKey"]


async def start(h: ServerHarness, key: str | None = None, origin: str | None = None,
                max_duration: int = 60) -> tuple[int, Any, Any]:
    headers = {"Origin": origin} if origin else None
    return await h.call("POST", "/v1/sessions", token=key or h.settings.admin_token,
                        json_body={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"},
                                   "maxDuration": max_duration}, headers=headers)


async def record(h: ServerHarness, sid: str) -> dict:
    status, body = await h.admin("GET", f"/v1/sessions/{sid}")
    assert status == 200, body
    return body


async def served(h: ServerHarness, sid: str, timeout: float = 15.0) -> dict:
    """Wait until ``sid`` left the room and its upstream session exists."""
    return await h.wait_for(sid, lambda r: r["upstreamId"] or r["status"] == "ENDED", timeout)


async def test_fifo_within_a_site_and_sites_in_turn(room: ServerHarness) -> None:
    h = room
    a, b = "https://a.example", "https://b.example"
    key_a, key_b = await make_site(h, a), await make_site(h, b)
    status, holder, _ = await start(h)  # the admin lane takes the one slot
    assert status == 201, holder
    await served(h, holder["id"])
    ids: dict[str, str] = {}
    for name in ("a1", "a2", "a3", "a4"):
        status, body, _ = await start(h, key_a, a)
        assert status == 201, body
        ids[name] = body["id"]
    for name in ("b1", "b2"):
        status, body, _ = await start(h, key_b, b)
        assert status == 201, body
        ids[name] = body["id"]
    # the crowd of site a came first, yet b's visitors are served in turn with it
    expected = ["a1", "b1", "a2", "b2", "a3", "a4"]
    places = {name: (await record(h, sid)) for name, sid in ids.items()}
    assert all(r["status"] == "PROVISIONING" and r["queued"] and r["upstreamId"] is None for r in places.values())
    assert [name for name, _ in sorted(places.items(), key=lambda kv: kv[1]["position"])] == expected
    assert all(r["etaSeconds"] is not None and r["etaSeconds"] > 0 for r in places.values())
    status, view = await h.admin("GET", "/v1/waiting-room")
    assert status == 200, view
    assert view["waiting"] == 6 and view["upstreamAlive"] == 1 and view["upstreamLimit"] == 1
    assert {lane["siteId"]: lane["waiting"] for lane in view["lanes"]}.keys() >= {None} - {None}
    assert sorted(lane["waiting"] for lane in view["lanes"]) == [2, 4]

    # each end frees the slot for the next in that order, and only then
    current = holder["id"]
    for name in expected:
        await h.admin("DELETE", f"/v1/sessions/{current}")
        rec = await served(h, ids[name])
        assert rec["status"] != "ENDED", rec
        for other in expected[expected.index(name) + 1:]:
            assert (await record(h, ids[other]))["upstreamId"] is None
        current = ids[name]
    await h.admin("DELETE", f"/v1/sessions/{current}")


async def test_places_never_rise_and_the_socket_hears_them(room: ServerHarness) -> None:
    h = room
    a, c = "https://a.example", "https://c.example"
    key_a, key_c = await make_site(h, a), await make_site(h, c)
    status, holder, _ = await start(h)
    await served(h, holder["id"])
    crowd = []
    for _ in range(5):
        status, body, _ = await start(h, key_a, a)
        assert status == 201
        crowd.append(body)
    last = crowd[-1]
    frames: list[dict] = []
    async with aiohttp.ClientSession() as http:
        url = last["signalUrl"] + f"?token={last['clientToken']}"
        async with http.ws_connect(url) as ws:
            async def read() -> None:
                async for msg in ws:
                    frames.append(json.loads(msg.data))
                    if frames[-1]["type"] in ("credentials", "ended"):
                        return
            reader = asyncio.create_task(read())
            seen: list[int] = []
            # a newcomer site arrives: its visitor is served in between, yet no place shown rises
            await asyncio.sleep(1.2)
            status, newcomer, _ = await start(h, key_c, c)
            assert status == 201
            order = [holder["id"]] + [x["id"] for x in crowd[:1]] + [newcomer["id"]] + [x["id"] for x in crowd[1:]]
            for i, sid in enumerate(order[:-1]):
                pos = (await record(h, last["id"]))["position"]
                seen.append(pos)
                await h.admin("DELETE", f"/v1/sessions/{sid}")
                await served(h, order[i + 1])
                await asyncio.sleep(1.1)  # places are announced at most once a second
            await asyncio.wait_for(reader, 15)
    assert seen == sorted(seen, reverse=True), seen
    positions = [f["position"] for f in frames if f["type"] == "status" and f.get("queued") and "position" in f]
    assert positions, frames
    assert positions == sorted(positions, reverse=True), positions
    assert positions[-1] == 1 and positions[0] >= 5, positions
    assert all(f["etaSeconds"] > 0 for f in frames if "position" in f)
    assert frames[-1]["type"] == "credentials", frames[-3:]
    await h.admin("DELETE", f"/v1/sessions/{last['id']}")


async def test_a_wait_past_the_deadline_ends_queue_timeout(redis_url: str, data_dir: Path) -> None:
    h = await room_server(data_dir, redis_url, upstream_concurrency=1, provision_timeout=3.0)
    try:
        status, holder, _ = await h.call("POST", "/v1/sessions/connect", token=h.settings.admin_token,
                                         json_body={"avatarId": "cooking-teacher", "maxDuration": 60})
        assert status == 200, holder
        status, waiting, _ = await start(h)
        assert status == 201
        rec = await h.wait_for(waiting["id"], lambda r: r["status"] == "ENDED", 10)
        assert rec["endReason"] == "queue_timeout" and rec["upstreamId"] is None, rec
        # the holder is untouched, and the room is empty again
        assert (await record(h, holder["sessionId"]))["status"] == "RUNNING"
        status, view = await h.admin("GET", "/v1/waiting-room")
        assert view["waiting"] == 0 and view["upstreamAlive"] == 1, view
        await h.admin("DELETE", f"/v1/sessions/{holder['sessionId']}")
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def test_a_full_room_refuses_at_once_and_writes_nothing(redis_url: str, data_dir: Path) -> None:
    h = await room_server(data_dir, redis_url, upstream_concurrency=1, waiting_room_size=2)
    try:
        a = "https://a.example"
        key = await make_site(h, a)
        ids = []
        for _ in range(3):
            status, body, _ = await start(h, key, a)
            assert status == 201, body
            ids.append(body["id"])
        status, body, headers = await start(h, key, a)
        assert status == 503, body
        assert body["error"]["code"] == "server_busy" and int(headers["Retry-After"]) >= 1
        status, page = await h.admin("GET", "/v1/sessions?status=active")
        assert sorted(r["id"] for r in page["data"]) == sorted(ids)
        status, sites = await h.admin("GET", "/v1/sites")
        assert sites["data"][0]["activeSessions"] == 3
        for sid in ids:
            await h.admin("DELETE", f"/v1/sessions/{sid}")
        await assert_no_leaks(h, None, h.control)
        await assert_upstream_never_over(h, 1)
    finally:
        await h.stop_all()


async def test_two_instances_share_one_room_and_one_budget(redis_url: str, data_dir: Path,
                                                            engine: EngineHarness) -> None:
    await engine.control("PATCH", "/config", {"provisioningDelay": "fixed:1.5"})
    common = {"runway_secret": ENGINE_KEY, "runway_base_url": engine.base, "upstream_concurrency": 2,
              "upstream_max_rps": 8, "start_rate_per_minute": 0}
    one = await ServerHarness(make_settings(data_dir, redis_url, **common)).start()
    two = await ServerHarness(make_settings(data_dir, redis_url, **common)).start()
    try:
        await engine.control("DELETE", "/stats")
        first = [(await start(one))[1]["id"], (await start(two))[1]["id"]]
        status, waiting, _ = await start(two)
        assert status == 201
        rec = await record(one, waiting["id"])
        assert rec["position"] == 1 and rec["upstreamId"] is None, rec
        for sid in first:
            await one.wait_for(sid, lambda r: r["status"] == "READY", 15)
        status, view = await two.admin("GET", "/v1/waiting-room")
        assert view["waiting"] == 1 and view["upstreamAlive"] == 2 and view["budget"]["maxRps"] == 8, view
        await one.admin("DELETE", f"/v1/sessions/{first[0]}")  # instance one frees the slot ...
        rec = await two.wait_for(waiting["id"], lambda r: r["status"] == "READY", 15)  # ... the room serves
        assert rec["position"] is None and not rec["queued"], rec
        for sid in (first[1], waiting["id"]):
            await two.admin("DELETE", f"/v1/sessions/{sid}")
        stats = await engine.control("GET", "/stats")
        # two instances, each wanting 10 polls a second per session: one budget of 8 requests a second
        assert 0 < stats["peakPerSecond"] <= 8, stats
        await assert_no_leaks(one, engine, engine.control)
        await assert_upstream_never_over(engine, 2)
    finally:
        await two.stop_all()
        await one.stop_all()


async def test_the_budget_holds_and_cancels_are_not_starved(redis_url: str, data_dir: Path,
                                                            engine: EngineHarness) -> None:
    """Thirty sessions provisioning at once want ~300 status reads a second; the budget is 10.
    Meanwhile every cancel still goes out at once, ahead of the polls."""
    await engine.control("PATCH", "/config", {"provisioningDelay": "fixed:4"})
    settings = make_settings(data_dir, redis_url, runway_secret=ENGINE_KEY, runway_base_url=engine.base,
                             upstream_max_rps=10, start_rate_per_minute=0)
    h = await ServerHarness(settings).start()
    try:
        await engine.control("DELETE", "/stats")
        ids = []
        for _ in range(30):
            status, body, _ = await start(h)
            assert status == 201, body
            ids.append(body["id"])
        for sid in ids:
            await h.wait_for(sid, lambda r: r["upstreamId"] is not None, 20)
        await asyncio.sleep(1.0)  # the polls now want far more than the budget
        took = []
        for sid in ids[:5]:
            started = asyncio.get_running_loop().time()
            status, rec = await h.admin("DELETE", f"/v1/sessions/{sid}")
            took.append(asyncio.get_running_loop().time() - started)
            assert status == 200 and rec["endReason"] == "admin", rec
            assert (await upstream_final(engine.control, rec["upstreamId"]))["status"] == "CANCELLED"
        # every other session still becomes READY, polled within the budget
        for sid in ids[5:]:
            rec = await h.wait_for(sid, lambda r: r["status"] in ("READY", "ENDED"), 30)
            assert rec["status"] == "READY", rec
        stats = await engine.control("GET", "/stats")
        assert 0 < stats["peakPerSecond"] <= 10, stats
        # a cancel waits for no poll: each DELETE answered within a couple of budget windows at most
        assert max(took) < 3.0, took
        for sid in ids[5:]:
            await h.admin("DELETE", f"/v1/sessions/{sid}")
        await assert_no_leaks(h, engine, engine.control)
    finally:
        await h.stop_all()


async def test_without_the_setting_the_first_upstream_queue_sets_the_limit(redis_url: str, data_dir: Path,
                                                                           engine: EngineHarness) -> None:
    """AVATAR_SERVER_UPSTREAM_CONCURRENCY=0: the upstream's first ``queued: true`` is the limit
    being reached; from then on further starts wait in the server's own room."""
    await engine.control("PATCH", "/config", {"concurrencyLimit": 2, "provisioningDelay": "fixed:0.5"})
    settings = make_settings(data_dir, redis_url, runway_secret=ENGINE_KEY, runway_base_url=engine.base,
                             start_rate_per_minute=0)
    h = await ServerHarness(settings).start()
    try:
        ids = []
        for _ in range(3):
            status, body, _ = await start(h)
            assert status == 201
            ids.append(body["id"])
        third = await h.wait_for(ids[2], lambda r: r["queued"] and r["upstreamId"] is not None, 10)
        assert third["position"] is None  # queued upstream, not in the room
        status, view = await h.admin("GET", "/v1/waiting-room")
        assert view["upstreamLimit"] == 2 and view["limitLearned"], view
        status, fourth, _ = await start(h)
        rec = await record(h, fourth["id"])
        assert rec["queued"] and rec["position"] == 1 and rec["upstreamId"] is None, rec
        await h.admin("DELETE", f"/v1/sessions/{ids[0]}")
        await h.wait_for(ids[2], lambda r: r["status"] == "READY", 10)  # the upstream dequeued it
        await h.admin("DELETE", f"/v1/sessions/{ids[1]}")
        rec = await h.wait_for(fourth["id"], lambda r: r["status"] == "READY", 10)  # the room served it
        stats = await engine.control("GET", "/stats")
        assert stats["peakAlive"] <= 3, stats  # the one the upstream queued, and never more
        for sid in (ids[2], fourth["id"]):
            await h.admin("DELETE", f"/v1/sessions/{sid}")
        await assert_no_leaks(h, engine, engine.control)
    finally:
        await h.stop_all()
