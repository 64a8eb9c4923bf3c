"""Hostile input over real HTTP: JSON nested too deep, numbers too large, NaN/Infinity, control
characters in names, strings for integers, malformed request lines. Every body route answers
400 ``invalid_json`` / 422 naming the field — never a 5xx — the engine's own routes included,
and a request aiohttp cannot parse is one INFO line, not an ERROR with a traceback."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from avatar_server.jsonlimits import MAX_DEPTH, MAX_INT_DIGITS

from ..harness import (
    ADMIN_TOKEN,
    ENGINE_KEY,
    EngineHarness,
    ServerHarness,
    assert_no_leaks,
    fast_engine_config,
    make_settings,
)
from .kb_helpers import avatar_body, make_avatar, make_document

ORIGIN = "https://shop.example.com"
PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}
RUNWAY = {"X-Runway-Version": "2024-11-06"}

# Each stays under the 64 KiB body limit of the session and site routes, so it reaches the parser.
HOSTILE: dict[str, bytes] = {
    "deep-unclosed": b"[" * 50_000,
    "deep-array": b"[" * 30_000 + b"]" * 30_000,
    "deep-object": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "one-past-the-depth": b'{"avatar":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
    "huge-int": b'{"maxDuration": ' + b"9" * 5_000 + b"}",
    "int-past-the-limit": b'{"maxDuration": 1' + b"0" * MAX_INT_DIGITS + b"}",
    "huge-float": b'{"maxDuration": 1e999}',
    "long-float": b'{"maxDuration": 1.' + b"5" * 5_000 + b"}",
    "nan": b'{"maxDuration": NaN}',
    "infinity": b'{"maxDuration": -Infinity}',
}


@pytest.fixture
async def server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """The conftest's server without the per-visitor start limit (10 a minute): these tests send
    many browser starts from one address, each of which must reach the body parser."""
    settings = replace(make_settings(data_dir, redis_url), start_rate_per_minute=0)
    h = await ServerHarness(settings, fast_engine_config()).start()
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def _site(server: ServerHarness, **changes: Any) -> dict:
    status, site = await server.admin("POST", "/v1/sites", {
        "name": "Shop", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
        "maxConcurrentSessions": 3, **changes})
    assert status == 201, site
    return site


async def _send(server: ServerHarness, method: str, path: str, body: bytes, *, token: str = ADMIN_TOKEN,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    h = {"Content-Type": "application/json", **(headers or {})}
    status, data, _ = await server.call(method, path, token=token, data=body, headers=h)
    return status, data


async def _body_routes(server: ServerHarness) -> list[tuple[str, str, bool, bool, bool]]:
    """Every POST/PATCH/PUT of the served API (from /openapi.json, so a new route is covered too):
    (method, path with real ids, takes a body, a browser may call it, every id in it is real)."""
    status, spec, _ = await server.call("GET", "/openapi.json")
    assert status == 200
    doc = await make_document(server)
    avatar = await make_avatar(server)
    site = await _site(server)
    ids = {"/v1/avatars/{id}": avatar["id"], "/v1/documents/{id}": doc["id"], "/v1/sites/{id}": site["id"]}
    routes = []
    for template, ops in spec["paths"].items():
        for method, op in ops.items():
            if method not in ("post", "patch", "put"):
                continue
            path = template
            for prefix, value in ids.items():
                if path.startswith(prefix):
                    path = value.join(path.split("{id}", 1))
            path = path.replace("{documentId}", doc["id"])
            known = "{" not in path
            path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)  # a route added later: some id
            browser = {"publishableKey": []} in op.get("security", [])
            routes.append((method.upper(), path, "requestBody" in op, browser, known))
    assert len([r for r in routes if r[2]]) >= 8, routes
    return routes


async def test_every_body_route_refuses_deep_json_and_huge_numbers_with_400(server: ServerHarness) -> None:
    routes = await _body_routes(server)
    site = await _site(server, name="Public")
    browser = {"Origin": ORIGIN}
    for kind, body in HOSTILE.items():
        for method, path, takes_body, public, known in routes:
            callers = [(ADMIN_TOKEN, None)] + ([(site["publishableKey"], browser)] if public else [])
            for token, headers in callers:
                status, data = await _send(server, method, path, body, token=token, headers=headers)
                where = (kind, method, path, token[:3], status, data)
                assert status < 500, where
                if takes_body and known:
                    assert status == 400, where
                    assert data["error"]["code"] == "invalid_json" and data["error"]["field"] == "body", where
    # nothing was started or written by any of it
    _, page = await server.admin("GET", "/v1/sessions?status=active")
    assert page["data"] == []
    _, sites = await server.admin("GET", "/v1/sites")
    assert {s["name"] for s in sites["data"]} == {"Shop", "Public"}


async def test_the_refusal_says_which_limit(server: ServerHarness) -> None:
    status, data = await _send(server, "POST", "/v1/sessions", HOSTILE["deep-array"])
    assert status == 400 and f"deeper than {MAX_DEPTH} levels" in data["error"]["message"], data
    status, data = await _send(server, "POST", "/v1/sessions", HOSTILE["huge-int"])
    assert status == 400 and f"more than {MAX_INT_DIGITS} digits" in data["error"]["message"], data
    # at the limits, the body is JSON and the model has its say (422 naming the field)
    at_depth = b'{"avatar":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    status, data = await _send(server, "POST", "/v1/sessions", at_depth)
    assert status == 422 and data["error"]["field"].startswith("avatar"), data
    at_digits = b'{"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}, "maxDuration": ' \
        + b"9" * MAX_INT_DIGITS + b"}"
    status, data = await _send(server, "POST", "/v1/sessions", at_digits)
    assert status == 422 and data["error"]["field"] == "maxDuration", data
    # brackets inside strings are text, not nesting
    text = '{"name": "x", "content": "' + "[" * 10_000 + '"}'
    status, doc = await _send(server, "POST", "/v1/documents", text.encode())
    assert status == 201, doc


async def test_engine_routes_refuse_the_same_with_400(server: ServerHarness) -> None:
    _, connected = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    any_id = str(uuid.uuid4())
    engine_routes = [("POST", "/engine/v1/realtime_sessions"), ("POST", "/engine/v1/avatars"),
                     ("PATCH", f"/engine/v1/avatars/{any_id}"), ("POST", "/engine/v1/documents"),
                     ("PATCH", f"/engine/v1/documents/{any_id}"), ("POST", "/engine/_control/faults"),
                     ("POST", "/engine/_control/fail-next"), ("PATCH", "/engine/_control/config")]
    for kind, body in HOSTILE.items():
        for method, path in engine_routes:
            status, data = await _send(server, method, path, body, headers=RUNWAY)
            assert status == 400 and isinstance(data["error"], str), (kind, method, path, status, data)
            assert data["error"].startswith("Invalid request body") or "body" in data["error"], data
        # the media offer of a live session
        offer = urlsplit(connected["serverUrl"]).path
        status, data = await _send(server, "POST", offer, body, token=connected["token"])
        assert status == 400 and "JSON" in data["error"], (kind, status, data)
    stats = await server.control("GET", "/stats")
    assert stats["pendingRules"] == 0  # no fault rule slipped in
    await server.admin("DELETE", f"/v1/sessions/{connected['sessionId']}")


async def test_the_engine_alone_refuses_deep_json_on_create(engine: EngineHarness) -> None:
    for body in (HOSTILE["deep-array"], HOSTILE["huge-int"], HOSTILE["nan"]):
        status, data, _ = await engine.call("POST", "/v1/realtime_sessions", token=ENGINE_KEY, data=body,
                                            headers={**RUNWAY, "Content-Type": "application/json"})
        assert status == 400 and data["error"].startswith("Invalid request body"), (status, data)
    assert await engine.control("GET", "/sessions") == []


# -- control characters -------------------------------------------------------------------------


async def test_control_characters_in_names_are_422_naming_the_field(server: ServerHarness) -> None:
    site = await _site(server)
    doc = await make_document(server)
    avatar = await make_avatar(server)
    browser = {"Origin": ORIGIN}
    cases: list[tuple[str, str, Any, str, dict[str, str] | None]] = [
        ("POST", "/v1/avatars", avatar_body(name="Ada\x00"), "name", None),
        ("POST", "/v1/avatars", avatar_body(name="Ada\nLovelace"), "name", None),
        ("POST", "/v1/avatars", avatar_body(personality="Kind.\x00"), "personality", None),
        ("POST", "/v1/avatars", avatar_body(startScript="Hello\x07"), "startScript", None),
        ("PATCH", f"/v1/avatars/{avatar['id']}", {"name": "\x1b[31mred"}, "name", None),
        ("PATCH", f"/v1/avatars/{avatar['id']}", {"personality": "a\x00b"}, "personality", None),
        ("POST", "/v1/documents", {"name": "FAQ\x00", "content": "text"}, "name", None),
        ("POST", "/v1/documents", {"name": "FAQ", "content": "te\x00xt"}, "content", None),
        ("PATCH", f"/v1/documents/{doc['id']}", {"name": "a\tb"}, "name", None),
        ("POST", "/v1/sites", {"name": "Shop\x00", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
                               "maxConcurrentSessions": 1}, "name", None),
        ("PATCH", f"/v1/sites/{site['id']}", {"name": "Shop\x7f"}, "name", None),
        ("POST", "/v1/sessions", {"avatar": PRESET, "personality": "x\x00"}, "personality", None),
        ("POST", "/v1/sessions", {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher\x00"}},
         "avatar.presetId", None),
        ("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher\x00"}, "avatarId", None),
        ("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher", "startScript": "Hi\x00"}, "startScript",
         None),
        ("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher", "tools": [
            {"type": "client_event", "name": "show", "description": "shows\x00"}]}, "tools.0.description", None),
        # the public start route, with a publishable key
        ("POST", "/v1/sessions", {"avatar": PRESET, "personality": "x\x00"}, "personality", browser),
        ("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher\x00"}, "avatarId", browser),
    ]
    for method, path, body, field, headers in cases:
        token = site["publishableKey"] if headers else ADMIN_TOKEN
        status, data, _ = await server.call(method, path, token=token, json_body=body, headers=headers)
        assert status == 422, (method, path, field, status, data)
        assert data["error"]["field"] == field and "control characters" in data["error"]["message"], data
    # free text keeps its line breaks and tabs
    status, data = await server.admin("PATCH", f"/v1/avatars/{avatar['id']}",
                                      {"personality": "Line one.\r\n\tLine two."})
    assert status == 200 and data["personality"] == "Line one.\r\n\tLine two.", data
    status, data = await server.admin("PATCH", f"/v1/documents/{doc['id']}", {"content": "a\n\tb\r\n"})
    assert status == 200, data
    _, page = await server.admin("GET", "/v1/sessions?status=active")
    assert page["data"] == []


# -- integers are integers -------------------------------------------------------------------------


async def test_integers_given_as_strings_booleans_or_floats_are_422(server: ServerHarness) -> None:
    site = await _site(server)
    browser = {"Origin": ORIGIN}
    for bad in ("20", "60", True, 60.0, [60], {"value": 60}):
        cases = [
            ("POST", "/v1/sessions", {"avatar": PRESET, "maxDuration": bad}, "maxDuration", None),
            ("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher", "maxDuration": bad}, "maxDuration",
             None),
            ("POST", "/v1/sessions", {"avatar": PRESET, "maxDuration": bad}, "maxDuration", browser),
            ("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher", "maxDuration": bad}, "maxDuration",
             browser),
            ("POST", "/v1/sites", {"name": "S", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
                                   "maxConcurrentSessions": bad}, "maxConcurrentSessions", None),
            ("POST", "/v1/sites", {"name": "S", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
                                   "maxConcurrentSessions": 2, "maxDuration": bad}, "maxDuration", None),
            ("PATCH", f"/v1/sites/{site['id']}", {"maxConcurrentSessions": bad}, "maxConcurrentSessions", None),
            ("PATCH", f"/v1/sites/{site['id']}", {"maxDuration": bad}, "maxDuration", None),
        ]
        for method, path, body, field, headers in cases:
            token = site["publishableKey"] if headers else ADMIN_TOKEN
            status, data, _ = await server.call(method, path, token=token, json_body=body, headers=headers)
            assert status == 422 and data["error"]["field"] == field, (bad, method, path, status, data)
    tool = {"type": "client_event", "name": "show", "description": "shows",
            "parameters": [{"name": "x", "description": "x", "type": "string", "required": "yes"}]}
    status, data = await server.admin("POST", "/v1/sessions", {"avatar": PRESET, "tools": [tool]})
    assert status == 422 and data["error"]["field"] == "tools.0.parameters.0.required", data
    # a real integer still works
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET, "maxDuration": 20})
    assert status == 201 and created["maxDuration"] == 20, created
    await server.admin("DELETE", f"/v1/sessions/{created['id']}")


# -- malformed requests ------------------------------------------------------------------------------

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS hello on the plain port
]


async def _raw(server: ServerHarness, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("payload", MALFORMED, ids=["garbage", "bad-method", "bad-header", "bad-version", "tls"])
async def test_a_malformed_request_is_400_and_one_info_line(server: ServerHarness, payload: bytes,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    answer = await _raw(server, payload)
    assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:200]
    await asyncio.sleep(0.05)  # the log line is written as the connection closes
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1, [(r.levelname, r.getMessage()) for r in lines]
    line = lines[0]
    assert line.levelno == logging.INFO and line.exc_info is None and line.exc_text is None
    assert "malformed HTTP request" in line.getMessage() and "\n" not in line.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], \
        [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    # the server goes on serving
    status, _, _ = await server.call("GET", "/healthz")
    assert status == 200


async def test_a_well_formed_request_logs_nothing_from_aiohttp_server(server: ServerHarness,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.base + "/healthz") as resp:
            assert resp.status == 200
    assert [r for r in caplog.records if r.name == "aiohttp.server"] == []


# -- the signal socket and the engine's data channel ------------------------------------------------


async def _frame(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    for _ in range(50):
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = msg.json()
        if data["type"] == kind:
            return data
    raise AssertionError(f"no {kind!r} frame")


async def test_a_deep_signal_frame_is_an_error_and_the_socket_goes_on(server: ServerHarness) -> None:
    _, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(created["signalUrl"] + "?token=" + created["clientToken"]) as ws:
            for frame in ("[" * 1_000, '{"type": "ping", "n": ' + "9" * 900 + "}"):  # both within 1 KB
                await ws.send_str(frame)
                error = await _frame(ws, "error")
                assert error["code"] == "invalid_json", error
                await ws.send_str('{"type": "ping"}')
                assert (await _frame(ws, "pong"))["type"] == "pong"
            await ws.send_str('{"type": "end"}')
            assert (await _frame(ws, "ended"))["reason"] == "client"


async def test_a_deep_data_channel_message_is_an_error_and_the_peer_goes_on(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ..e2e.rtc_helpers import connect_over_http, use_loopback_candidates

    use_loopback_candidates(monkeypatch)
    _, connected = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    async with aiohttp.ClientSession() as http:
        client = await connect_over_http(http, connected["serverUrl"], connected["token"])
        try:
            await client.wait_open()
            client.channel.send("[" * 16_000)  # within the peer's 16 KB message limit
            await client.wait_for(lambda: any(m.get("type") == "error" for m in client.messages))
            assert [m["message"] for m in client.messages if m.get("type") == "error"] == ["messages must be JSON"]
            client.send({"type": "user_message", "text": "Hello there"})
            await client.wait_for(lambda: "Hello there" in client.transcripts("user"))
        finally:
            await client.close()
    await server.admin("DELETE", f"/v1/sessions/{connected['sessionId']}")
