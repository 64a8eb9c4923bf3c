"""Sites: admin CRUD, origin validation, publishable keys and their rotation, browser starts
(origin, avatar, maxDuration ceiling, per-visitor rate limit), client tokens dying with their session."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from avatar_server.store.sites import key_hash

from ..harness import ServerHarness, fast_engine_config, make_settings
from .kb_helpers import make_avatar, wait_status

ORIGIN = "https://shop.example.com"
SITE = {"name": "Shop", "allowedOrigins": [ORIGIN, "http://localhost:3000"],
        "avatarIds": ["cooking-teacher", "8F14E45F-CEEA-467A-9575-5B1B2E3F4A5C"], "maxConcurrentSessions": 3}


async def make_site(server: ServerHarness, **changes: Any) -> dict:
    status, site = await server.admin("POST", "/v1/sites", {**SITE, **changes})
    assert status == 201, site
    return site


async def browser(server: ServerHarness, method: str, path: str, key: str, body: Any = None,
                  origin: str | None = ORIGIN) -> tuple[int, Any, Any]:
    headers = {"Origin": origin} if origin is not None else {}
    return await server.call(method, path, token=key, json_body=body, headers=headers)


async def test_crud_and_paging(server: ServerHarness) -> None:
    site = await make_site(server, maxDuration=120)
    assert site["publishableKey"].startswith("pk_") and len(site["publishableKey"]) >= 3 + 22
    assert site["allowedOrigins"] == [ORIGIN, "http://localhost:3000"]
    # custom avatar ids are normalised to lower case; presets kept
    assert site["avatarIds"] == ["cooking-teacher", "8f14e45f-ceea-467a-9575-5b1b2e3f4a5c"]
    assert site["maxDuration"] == 120 and site["activeSessions"] == 0
    status, got = await server.admin("GET", f"/v1/sites/{site['id']}")
    # the webhook secret is in the create answer only (docs/operations.md, "Webhooks")
    assert site["webhookSecret"].startswith("whsec_") and "webhookSecret" not in got
    assert status == 200 and got == {k: v for k, v in site.items() if k != "webhookSecret"}
    status, patched = await server.admin("PATCH", f"/v1/sites/{site['id']}",
                                         {"name": "Shop 2", "maxDuration": None, "maxConcurrentSessions": 5})
    assert status == 200, patched
    assert patched["name"] == "Shop 2" and patched["maxDuration"] is None and patched["maxConcurrentSessions"] == 5
    assert patched["publishableKey"] == site["publishableKey"]
    ids = [site["id"]] + [(await make_site(server, name=f"s{i}"))["id"] for i in range(4)]
    seen: list[str] = []
    created: list[str] = []
    cursor = None
    while True:
        q = "/v1/sites?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await server.admin("GET", q)
        assert status == 200, page
        assert len(page["data"]) <= 2
        seen += [s["id"] for s in page["data"]]
        created += [s["createdAt"] for s in page["data"]]
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            break
        cursor = page["nextCursor"]
    # every site once, oldest first (ties within a millisecond ordered by id)
    assert sorted(seen) == sorted(ids) and len(set(seen)) == len(seen)
    assert created == sorted(created)
    status, _ = await server.admin("DELETE", f"/v1/sites/{site['id']}")
    assert status == 204
    status, err = await server.admin("GET", f"/v1/sites/{site['id']}")
    assert status == 404 and err["error"]["code"] == "site_not_found"
    status, err = await server.admin("DELETE", f"/v1/sites/{site['id']}")
    assert status == 404
    # the deleted site's key no longer starts anything
    status, err, _ = await browser(server, "POST", "/v1/sessions/connect", site["publishableKey"],
                                   {"avatarId": "cooking-teacher"})
    assert status == 401 and err["error"]["code"] == "invalid_publishable_key"


@pytest.mark.parametrize("origin", [
    "null", "https://shop.example.com/", "https://shop.example.com/path", "ftp://shop.example.com",
    "https://*.example.com", "shop.example.com", "https://user@shop.example.com", "https://shop.example.com?x=1",
    "https://shop.example.com:99999", "https://bücher.example", "",
])
async def test_bad_origins_are_refused_naming_the_field(server: ServerHarness, origin: str) -> None:
    status, err = await server.admin("POST", "/v1/sites", {**SITE, "allowedOrigins": [origin]})
    assert status == 422, err
    assert err["error"]["field"].startswith("allowedOrigins")


async def test_origins_normalised_like_browsers_send_them(server: ServerHarness) -> None:
    site = await make_site(server, allowedOrigins=["HTTPS://Shop.Example.com:443", "http://127.0.0.1:8080",
                                                   "http://[::1]:3000", "https://shop.example.com"])
    assert site["allowedOrigins"] == ["https://shop.example.com", "http://127.0.0.1:8080", "http://[::1]:3000"]


async def test_site_validation(server: ServerHarness) -> None:
    for body, field in [
        ({**SITE, "maxDuration": 301}, "maxDuration"),
        ({**SITE, "maxConcurrentSessions": 0}, "maxConcurrentSessions"),
        ({**SITE, "avatarIds": []}, "avatarIds"),
        ({**SITE, "avatarIds": ["Not An Id!"]}, "avatarIds.0"),
        ({**SITE, "avatarIds": ["cooking-teacher", "tennis-coachx"]}, "avatarIds.1"),  # no such preset
        ({**SITE, "name": "  "}, "name"),
        ({**SITE, "publishableKey": "pk_mine"}, "publishableKey"),
    ]:
        status, err = await server.admin("POST", "/v1/sites", body)
        assert status == 422, (body, err)
        assert err["error"]["field"] == field, err
    site = await make_site(server)
    status, err = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"allowedOrigins": None})
    assert status == 422 and err["error"]["field"] == "allowedOrigins"


async def test_site_max_duration_above_a_lower_cap_is_refused(redis_url: str, data_dir: Path) -> None:
    s = make_settings(data_dir, redis_url, cap_seconds=60)
    h = await ServerHarness(s, fast_engine_config()).start()
    try:
        status, err = await h.admin("POST", "/v1/sites", {**SITE, "maxDuration": 90})
        assert status == 422 and err["error"]["field"] == "maxDuration" and err["error"]["limit"] == 60
    finally:
        await h.stop_all()


async def test_browser_start_from_allowed_origin(server: ServerHarness) -> None:
    site = await make_site(server, maxDuration=60)
    status, body, headers = await browser(server, "POST", "/v1/sessions/connect", site["publishableKey"],
                                          {"avatarId": "cooking-teacher"})
    assert status == 200, body
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    rec = await server.wait_for(body["sessionId"], lambda r: r["status"] == "RUNNING", token=body["clientToken"])
    assert rec["siteId"] == site["id"] and rec["maxDuration"] == 60
    # the site's maxDuration is a ceiling
    status, err, _ = await browser(server, "POST", "/v1/sessions", site["publishableKey"],
                                   {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"},
                                    "maxDuration": 61})
    assert status == 422 and err["error"]["field"] == "maxDuration"
    # a custom avatar of the site's list (it must exist and be READY)
    avatar = await wait_status(server, (await make_avatar(server))["id"], "READY")
    status, _ = await server.admin("PATCH", f"/v1/sites/{site['id']}",
                                   {"avatarIds": [*site["avatarIds"], avatar["id"]]})
    assert status == 200
    status, created, _ = await browser(server, "POST", "/v1/sessions", site["publishableKey"],
                                       {"avatar": {"type": "custom", "avatarId": avatar["id"]}})
    assert status == 201, created
    assert created["maxDuration"] == 60
    status, got = await server.admin("GET", f"/v1/sites/{site['id']}")
    assert got["activeSessions"] == 2
    for sid in (body["sessionId"], created["id"]):
        await server.admin("DELETE", f"/v1/sessions/{sid}")
    status, got = await server.admin("GET", f"/v1/sites/{site['id']}")
    assert got["activeSessions"] == 0


@pytest.mark.parametrize("origin", ["https://evil.example.com", None, "null", "https://shop.example.com.evil.com",
                                    "http://shop.example.com"])
async def test_browser_start_refused_from_other_origins(server: ServerHarness, origin: str | None) -> None:
    site = await make_site(server)
    status, err, headers = await browser(server, "POST", "/v1/sessions/connect", site["publishableKey"],
                                         {"avatarId": "cooking-teacher"}, origin=origin)
    assert status == 403, err
    assert err["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers
    assert await server.control("GET", "/sessions") == []


async def test_avatar_not_on_the_site(server: ServerHarness) -> None:
    site = await make_site(server)
    for body in ({"avatarId": "tennis-coach"}, {"avatarId": "11111111-2222-4333-8444-555555555555"}):
        status, err, _ = await browser(server, "POST", "/v1/sessions/connect", site["publishableKey"], body)
        assert status == 403 and err["error"]["code"] == "avatar_not_allowed", err
    assert await server.control("GET", "/sessions") == []


async def test_key_rotation_stops_the_old_key_at_once(server: ServerHarness) -> None:
    site = await make_site(server)
    old = site["publishableKey"]
    status, rotated = await server.admin("POST", f"/v1/sites/{site['id']}/rotate-key")
    assert status == 200 and rotated["publishableKey"] != old and rotated["keyRotatedAt"]
    body = {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}}
    status, err, _ = await browser(server, "POST", "/v1/sessions", old, body)
    assert status == 401 and err["error"]["code"] == "invalid_publishable_key"
    status, created, _ = await browser(server, "POST", "/v1/sessions", rotated["publishableKey"], body)
    assert status == 201, created
    # only the hash of the key indexes the site
    import redis.asyncio as aioredis
    r = aioredis.Redis.from_url(server.settings.redis_url, decode_responses=True)
    try:
        assert await r.get(f"as:sitekey:{key_hash(rotated['publishableKey'])}") == site["id"]
        assert await r.get(f"as:sitekey:{key_hash(old)}") is None
        assert not [k async for k in r.scan_iter(match=f"*{rotated['publishableKey']}*")]
    finally:
        await r.aclose()
    await server.admin("DELETE", f"/v1/sessions/{created['id']}")
    status, _ = await server.admin("POST", "/v1/sites/00000000-0000-4000-8000-000000000000/rotate-key")
    assert status == 404


async def test_per_visitor_rate_limit(redis_url: str, data_dir: Path) -> None:
    s = replace(make_settings(data_dir, redis_url), start_rate_per_minute=2)
    h = await ServerHarness(s, fast_engine_config()).start()
    try:
        site = await make_site(h, maxConcurrentSessions=10)
        body = {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}}
        ids = []
        for _ in range(2):
            status, created, _ = await browser(h, "POST", "/v1/sessions", site["publishableKey"], body)
            assert status == 201, created
            ids.append(created["id"])
        status, err, headers = await browser(h, "POST", "/v1/sessions", site["publishableKey"], body)
        assert status == 429 and err["error"]["code"] == "rate_limited" and err["error"]["limit"] == 2
        assert 1 <= int(headers["Retry-After"]) <= 60
        # the admin is not a visitor
        status, created = await h.admin("POST", "/v1/sessions", body)
        assert status == 201
        ids.append(created["id"])
        for sid in ids:
            await h.admin("DELETE", f"/v1/sessions/{sid}")
    finally:
        await h.stop_all()


async def test_forwarded_for_only_from_trusted_proxies(redis_url: str, data_dir: Path) -> None:
    import ipaddress
    s = replace(make_settings(data_dir, redis_url), start_rate_per_minute=1,
                trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    h = await ServerHarness(s, fast_engine_config()).start()
    try:
        site = await make_site(h, maxConcurrentSessions=10)
        body = {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}}
        ids = []

        async def start(xff: str) -> int:
            status, created, _ = await h.call("POST", "/v1/sessions", token=site["publishableKey"], json_body=body,
                                              headers={"Origin": ORIGIN, "X-Forwarded-For": xff})
            if status == 201:
                ids.append(created["id"])
            return status

        assert await start("203.0.113.7") == 201
        assert await start("203.0.113.7") == 429
        assert await start("198.51.100.1, 203.0.113.8") == 201  # the right-most untrusted hop counts
        assert await start("203.0.113.9, 203.0.113.8") == 429  # a spoofed left part changes nothing
        # IPv6 visitors count by their /64: another address in the same network is the same visitor
        assert await start("2001:db8:1:2::10") == 201
        assert await start("2001:db8:1:2:ffff::99") == 429
        assert await start("2001:db8:1:3::10") == 201
        for sid in ids:
            await h.admin("DELETE", f"/v1/sessions/{sid}")
    finally:
        await h.stop_all()


async def test_untrusted_peer_cannot_spoof_forwarded_for(redis_url: str, data_dir: Path) -> None:
    s = replace(make_settings(data_dir, redis_url), start_rate_per_minute=1)
    h = await ServerHarness(s, fast_engine_config()).start()
    try:
        site = await make_site(h)
        body = {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}}
        first = await h.call("POST", "/v1/sessions", token=site["publishableKey"], json_body=body,
                             headers={"Origin": ORIGIN, "X-Forwarded-For": "203.0.113.1"})
        second = await h.call("POST", "/v1/sessions", token=site["publishableKey"], json_body=body,
                              headers={"Origin": ORIGIN, "X-Forwarded-For": "203.0.113.2"})
        assert first[0] == 201 and second[0] == 429
        await h.admin("DELETE", f"/v1/sessions/{first[1]['id']}")
    finally:
        await h.stop_all()


async def test_client_token_dies_with_its_session(server: ServerHarness) -> None:
    site = await make_site(server)
    status, created, _ = await browser(server, "POST", "/v1/sessions", site["publishableKey"],
                                       {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}})
    assert status == 201
    ct = created["clientToken"]
    sid = created["id"]
    status, _, _ = await server.call("GET", f"/v1/sessions/{sid}", token=ct)
    assert status == 200
    status, ended, _ = await server.call("DELETE", f"/v1/sessions/{sid}", token=ct)
    assert status == 200 and ended["endReason"] == "client"
    for method in ("GET", "DELETE"):
        status, err, _ = await server.call(method, f"/v1/sessions/{sid}", token=ct)
        assert status == 401 and err["error"]["code"] == "client_token_expired", (method, err)
    # the signal socket of the ended session only tells it why, then closes
    async with aiohttp.ClientSession() as http, http.ws_connect(created["signalUrl"] + "?token=" + ct) as ws:
        msg = await ws.receive(timeout=5)
        assert json.loads(msg.data) == {"type": "ended", "reason": "client", "message": "The session was ended."}
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
