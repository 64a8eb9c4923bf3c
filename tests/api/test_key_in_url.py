"""The publishable key in the URL (issue 15): ``POST /v1/sessions/connect?key=pk_…`` and
``POST /v1/sessions?key=pk_…`` are the same as ``Authorization: Bearer pk_…`` — origin rule,
avatar allowlist, per-site and per-visitor limits — and nothing else is ever accepted in a URL
(the admin token or a client token there: 401 ``credential_in_url``). The preflight of a keyed URL
is decided by the key's site. ``/connect`` says which transport it serves: a ``?key=`` caller
(Runway's SDKs) is a LiveKit caller unless it says ``?transport=webrtc``; a caller that cannot use
the server's transport gets 409 ``transport_unsupported`` and never credentials. The key never
reaches a log line (the autouse leak guard checks every record; the tests here check too)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ..harness import (
    EngineHarness,
    ServerHarness,
    assert_no_leaks,
    fast_engine_config,
    make_settings,
    runway_mode,
)
from .test_access_matrix import SIGNAL, _body, _fill, _routes

SHOP = "https://shop.example.com"
BLOG = "https://blog.example.org"
PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}
CONNECT = {"avatarId": "cooking-teacher"}
LIVEKIT_URL = "wss://livekit.test.invalid"


async def _site(server: ServerHarness, origin: str = SHOP, **kw: Any) -> dict:
    body = {"name": origin, "allowedOrigins": [origin], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 5, **kw}
    status, site = await server.admin("POST", "/v1/sites", body)
    assert status == 201, site
    return site


async def _start(server: ServerHarness, how: str, key: str, path: str = "/v1/sessions", *,
                 origin: str | None = SHOP, body: Any = None, query: str = "") -> tuple[int, Any, Any]:
    """A start with the key in the header (``how="header"``) or in the URL (``how="url"``)."""
    headers = {"Origin": origin} if origin else {}
    if body is None:
        body = {"avatar": PRESET} if path == "/v1/sessions" else CONNECT
    if how == "url":
        sep = "&" if query else ""
        return await server.call("POST", f"{path}?key={quote(key)}{sep}{query}", json_body=body, headers=headers)
    return await server.call("POST", path + (f"?{query}" if query else ""), token=key, json_body=body,
                             headers=headers)


async def _end(server: ServerHarness, *ids: str) -> None:
    for sid in ids:
        await server.admin("DELETE", f"/v1/sessions/{sid}")


def _assert_key_not_logged(caplog: pytest.LogCaptureFixture, key: str) -> None:
    lines = [r.getMessage() + " " + " ".join(str(v) for v in r.__dict__.values() if isinstance(v, str))
             for r in caplog.records]
    assert not [line for line in lines if key in line], "the publishable key reached a log line"


# --- same rules as the header ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["header", "url"])
async def test_create_with_the_key_in_the_url_is_the_same_as_the_header(
        server: ServerHarness, how: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    site = await _site(server)
    key = site["publishableKey"]
    status, created, h = await _start(server, how, key)
    assert status == 201, created
    assert created["clientToken"].startswith("ct_") and created["signalUrl"], created
    assert h["Access-Control-Allow-Origin"] == SHOP and "Origin" in h["Vary"]
    status, rec = await server.admin("GET", f"/v1/sessions/{created['id']}")
    assert rec["siteId"] == site["id"], rec
    # the site's rules, unchanged
    status, err, h = await _start(server, how, key, origin=BLOG)
    assert (status, err["error"]["code"]) == (403, "origin_not_allowed"), err
    assert "Access-Control-Allow-Origin" not in h  # not readable from another site's page
    status, err, _ = await _start(server, how, key, origin=None)
    assert (status, err["error"]["code"]) == (403, "origin_not_allowed"), err
    status, err, _ = await _start(server, how, key, body={"avatar": {"type": "runway-preset",
                                                                      "presetId": "tennis-coach"}})
    assert status == 403, err
    await _end(server, created["id"])
    # a rotated key is dead at once, wherever it is sent
    status, rotated = await server.admin("POST", f"/v1/sites/{site['id']}/rotate-key")
    assert status == 200, rotated
    status, err, _ = await _start(server, how, key)
    assert (status, err["error"]["code"]) == (401, "invalid_publishable_key"), err
    _assert_key_not_logged(caplog, key)


@pytest.mark.parametrize("how", ["header", "url"])
async def test_the_per_site_limit_counts_url_keys_and_header_keys_alike(server: ServerHarness, how: str) -> None:
    key = (await _site(server, maxConcurrentSessions=2))["publishableKey"]
    other = "url" if how == "header" else "header"
    s1, a, _ = await _start(server, how, key)
    s2, b, _ = await _start(server, other, key)
    assert (s1, s2) == (201, 201), (a, b)
    status, err, h = await _start(server, how, key)
    assert (status, err["error"]["code"]) == (429, "concurrency_limit"), err
    assert err["error"]["limit"] == 2 and "Retry-After" in h
    await _end(server, a["id"], b["id"])


async def test_the_per_visitor_limit_counts_url_keys_and_header_keys_alike(
        redis_url: str, data_dir: Path) -> None:
    h = await ServerHarness(make_settings(data_dir, redis_url, start_rate_per_minute=3), fast_engine_config()).start()
    try:
        key = (await _site(h, maxConcurrentSessions=10))["publishableKey"]
        started = []
        for how in ("url", "header", "url"):
            status, created, _ = await _start(h, how, key)
            assert status == 201, created
            started.append(created["id"])
        for how in ("url", "header"):
            status, err, headers = await _start(h, how, key)
            assert (status, err["error"]["code"]) == (429, "rate_limited"), err
            assert "Retry-After" in headers
        await _end(h, *started)
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


# --- nothing else in the URL -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/sessions/connect"])
async def test_the_admin_token_is_never_accepted_in_the_url(server: ServerHarness, path: str) -> None:
    await _site(server)
    admin = server.settings.admin_token
    for origin in (None, SHOP):
        status, err, h = await _start(server, "url", admin, path, origin=origin)
        assert (status, err["error"]["code"]) == (401, "credential_in_url"), err
        assert "admin token is never accepted in the URL" in err["error"]["message"], err
        assert admin not in str(err)
    # the same with the key's other spellings: still refused, never served as anonymous
    for param in ("token", "access_token", "api_key"):
        status, err, _ = await server.call("POST", f"{path}?{param}={admin}", json_body=_body("POST", path))
        assert (status, err["error"]["code"]) == (401, "credential_in_url"), (param, err)


async def test_no_credential_but_a_publishable_key_on_a_start_is_accepted_in_the_url(server: ServerHarness) -> None:
    key = (await _site(server))["publishableKey"]
    _, created, _ = await _start(server, "header", key)
    client_token = created["clientToken"]
    for bad in (client_token, "sk_" + "a" * 30, "not-a-key-at-all"):
        status, err, _ = await _start(server, "url", bad, "/v1/sessions/connect")
        assert (status, err["error"]["code"]) == (401, "credential_in_url"), err
    # one credential, not two
    status, err, _ = await server.call("POST", f"/v1/sessions?key={key}", token=key, json_body={"avatar": PRESET},
                                       headers={"Origin": SHOP})
    assert (status, err["error"]["code"]) == (400, "ambiguous_credential"), err
    status, err, _ = await server.call("POST", f"/v1/sessions?key={key}&key={key}", json_body={"avatar": PRESET},
                                       headers={"Origin": SHOP})
    assert (status, err["error"]["code"]) == (400, "ambiguous_credential"), err
    # a client token reads its session from the header only; the signal socket keeps its ?token=
    sid = created["id"]
    status, err, _ = await server.call("GET", f"/v1/sessions/{sid}?token={client_token}")
    assert (status, err["error"]["code"]) == (401, "credential_in_url"), err
    status, rec, _ = await server.call("GET", f"/v1/sessions/{sid}", token=client_token)
    assert status == 200, rec
    await _end(server, sid)


async def test_every_route_refuses_the_admin_token_in_the_url(server: ServerHarness) -> None:
    site = await _site(server)
    _, own = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    admin = server.settings.admin_token
    failures = []
    for method, template in _routes(server):
        if (method, template) == SIGNAL:
            continue  # its own rule: ?token=<clientToken> only (the admin token there is 403)
        path = _fill(template, own["id"], site["id"])
        for param in ("key", "token"):
            status, body, _ = await server.call(method, f"{path}?{param}={admin}", json_body=_body(method, template))
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if (status, code) != (401, "credential_in_url"):
                failures.append(f"{method} {template}?{param}=<admin>: {status} {body}")
    await _end(server, own["id"])
    assert not failures, "\n".join(failures)


# --- the preflight of the SDK's request ------------------------------------------------------

async def _preflight(server: ServerHarness, path: str, origin: str) -> tuple[int, dict]:
    # what a browser sends before Runway's SDK's fetch(connectUrl, {Content-Type: application/json})
    status, _, h = await server.call("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    return status, dict(h)


async def test_the_preflight_of_a_keyed_url_is_decided_by_the_keys_site(server: ServerHarness) -> None:
    shop = await _site(server, SHOP)
    await _site(server, BLOG)
    for path in ("/v1/sessions/connect", "/v1/sessions"):
        status, h = await _preflight(server, f"{path}?key={shop['publishableKey']}", SHOP)
        assert status == 204, h
        assert h["Access-Control-Allow-Origin"] == SHOP and "POST" in h["Access-Control-Allow-Methods"]
        assert "content-type" in h["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in h and "Origin" in h["Vary"]
        # another site's origin: that site's page may not use this key, so not even the preflight
        status, h = await _preflight(server, f"{path}?key={shop['publishableKey']}", BLOG)
        assert status == 403 and "Access-Control-Allow-Origin" not in h, h
        # an unknown key from an allowed origin: the preflight passes, so the page reads the 401
        status, h = await _preflight(server, f"{path}?key=pk_{'x' * 32}", SHOP)
        assert status == 204, h
        status, err, h = await server.call("POST", f"{path}?key=pk_{'x' * 32}", json_body=_body("POST", path),
                                           headers={"Origin": SHOP})
        assert (status, err["error"]["code"]) == (401, "invalid_publishable_key"), err
        assert h["Access-Control-Allow-Origin"] == SHOP
        status, h = await _preflight(server, f"{path}?key={shop['publishableKey']}", "https://evil.example.com")
        assert status == 403, h


# --- which transport ---------------------------------------------------------------------------

async def test_engine_mode_tells_a_livekit_caller_to_use_the_widget(
        server: ServerHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = (await _site(server))["publishableKey"]
    # Runway's SDK: the key in the URL, no say about transport → LiveKit; the engine speaks WebRTC
    for query in ("", "transport=livekit"):
        status, err, h = await _start(server, "url", key, "/v1/sessions/connect", query=query)
        assert (status, err["error"]["code"]) == (409, "transport_unsupported"), err
        assert "<avatar-widget>" in err["error"]["message"] and "WebRTC" in err["error"]["message"], err
        assert err["error"]["transport"] == "webrtc" and err["error"]["accepted"] == ["livekit"], err
        assert h["Access-Control-Allow-Origin"] == SHOP  # the page (and the SDK's error) can read why
        assert "sessionKey" not in str(err) and "token" not in err
    # the header caller asking for LiveKit: the same answer
    status, err, _ = await _start(server, "header", key, "/v1/sessions/connect", query="transport=livekit")
    assert (status, err["error"]["code"]) == (409, "transport_unsupported"), err
    status, page = await server.admin("GET", "/v1/sessions?status=active")
    assert page["data"] == [], page  # nothing was started for any of them
    status, err, _ = await _start(server, "url", key, "/v1/sessions/connect", query="transport=carrier-pigeon")
    assert (status, err["error"].get("field")) == (422, "transport"), err
    # a caller that speaks WebRTC says so, and gets the same answer as with the header
    answers = []
    for how, query in (("url", "transport=webrtc"), ("url", "transport=livekit,webrtc"), ("header", "")):
        status, body, _ = await _start(server, how, key, "/v1/sessions/connect", query=query)
        assert status == 200, body
        assert body["transport"] == "webrtc" and body["serverUrl"] and body["token"] and body["iceServers"] is not None
        assert "sessionKey" not in body
        answers.append(body)
        await _end(server, body["sessionId"])
    assert {frozenset(a) for a in answers} == {frozenset(answers[0])}  # same fields either way
    _assert_key_not_logged(caplog, key)


async def test_runway_mode_never_hands_webrtc_credentials_to_a_livekit_caller(
        runway_server: ServerHarness, engine: EngineHarness) -> None:
    # an upstream that answers plain WebRTC (the local engine as the upstream): found out only at
    # consume; the session is ended and the caller gets 409, never the credentials
    key = (await _site(runway_server))["publishableKey"]
    status, err, _ = await _start(runway_server, "url", key, "/v1/sessions/connect")
    assert (status, err["error"]["code"]) == (409, "transport_unsupported"), err
    assert "token" not in err and "serverUrl" not in err
    status, page = await runway_server.admin("GET", "/v1/sessions?status=ended")
    [rec] = page["data"]
    assert rec["endReason"] == "error", rec
    status, body, _ = await _start(runway_server, "header", key, "/v1/sessions/connect")
    assert status == 200 and body["transport"] == "webrtc", body  # a header caller takes either, as before
    await _end(runway_server, body["sessionId"])


@pytest.fixture
async def livekit_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """Runway mode against an engine whose consume answers a LiveKit ``wss://`` URL, as Runway does."""
    async with runway_mode(data_dir, redis_url, public_url=LIVEKIT_URL) as (h, _):
        yield h

async def test_runway_mode_answers_the_sdk_with_livekit_credentials(
        livekit_server: ServerHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = livekit_server
    key = (await _site(server))["publishableKey"]
    status, body, h = await _start(server, "url", key, "/v1/sessions/connect")
    assert status == 200, body
    # the shape Runway's SDK takes from a connectUrl — credentials, never {sessionId, sessionKey}
    assert body["transport"] == "livekit" and body["serverUrl"].startswith(LIVEKIT_URL), body
    assert body["token"] and body["roomName"] and body["sessionId"] and "sessionKey" not in body
    assert "iceServers" not in body
    assert h["Access-Control-Allow-Origin"] == SHOP
    status, err, _ = await _start(server, "url", key, "/v1/sessions/connect", query="transport=webrtc")
    assert (status, err["error"]["code"]) == (409, "transport_unsupported"), err
    await _end(server, body["sessionId"])
    _assert_key_not_logged(caplog, key)
