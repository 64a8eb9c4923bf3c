"""Connection hardening over real sockets: header and idle timeouts, slow bodies, WebSocket
message size and rate limits. Bounds in these tests are generous loop limits, not timings."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from avatar_server.models.signal import MAX_CLIENT_MESSAGE_BYTES
from avatar_server.signalling.broker import RATE_MAX

from ..harness import ADMIN_TOKEN, ServerHarness, make_settings

PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}


@pytest.fixture
async def strict_server(redis_url, data_dir):
    h = await ServerHarness(make_settings(data_dir, redis_url, idle_timeout=1.0, body_timeout=1.0)).start()
    try:
        yield h
    finally:
        await h.stop_all()


async def _open(server: ServerHarness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.settings.port)


async def _closed_while_trickling(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, line: bytes) -> bytes:
    """Sends ``line`` every 0.2 s (for at most 50 lines) until the server closes; returns what it sent."""
    for _ in range(50):
        try:
            writer.write(line)
            await writer.drain()
        except ConnectionError:
            break
        try:
            data = await asyncio.wait_for(reader.read(4096), 0.2)
        except TimeoutError:
            continue
        return data
    raise AssertionError("the server kept a trickling connection open")


async def test_headers_must_arrive_within_the_idle_timeout(strict_server: ServerHarness) -> None:
    reader, writer = await _open(strict_server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answered = await _closed_while_trickling(writer, reader, b"X-Slow: 1\r\n")
    assert answered == b""  # closed without a response: the request never completed
    writer.close()


async def test_idle_keepalive_connection_is_closed(strict_server: ServerHarness) -> None:
    reader, writer = await _open(strict_server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    assert await asyncio.wait_for(reader.read(100), 10) == b""  # the server hung up on the idle connection
    writer.close()


async def test_slow_body_is_408_and_nothing_is_written(strict_server: ServerHarness) -> None:
    body = json.dumps({"name": "slow", "allowedOrigins": ["https://shop.example"],
                       "avatarIds": ["cooking-teacher"], "maxConcurrentSessions": 2}).encode()
    reader, writer = await _open(strict_server)
    writer.write(
        b"POST /v1/sites HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 408"), head
    rest = await asyncio.wait_for(reader.read(4096), 5)
    error = json.loads(rest.split(b"\r\n\r\n")[-1] or rest)["error"]
    assert error["code"] == "request_timeout" and error["field"] == "body"
    writer.close()
    status, sites = await strict_server.admin("GET", "/v1/sites")
    assert status == 200 and sites["data"] == []


async def _signal_socket(server: ServerHarness, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET, "maxDuration": 60})
    assert status == 201, created
    return await http.ws_connect(created["signalUrl"] + "?token=" + created["clientToken"])


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    for _ in range(100):
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"socket closed before a {kind!r} message: {msg}")
        data = json.loads(msg.data)
        if data["type"] == kind:
            return data
    raise AssertionError(f"no {kind!r} message")


async def test_oversized_signal_message_is_refused_and_socket_stays(server: ServerHarness) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await _signal_socket(server, http)
        await ws.send_str(json.dumps({"type": "ping", "pad": "x" * (MAX_CLIENT_MESSAGE_BYTES + 1)}))
        error = await _until(ws, "error")
        assert error["code"] == "message_too_large"
        await ws.send_str(json.dumps({"type": "ping"}))
        assert (await _until(ws, "pong"))["type"] == "pong"
        await ws.send_str(json.dumps({"type": "end"}))
        assert (await _until(ws, "ended"))["reason"] == "client"
        await ws.close()


async def test_signal_message_flood_closes_the_socket(server: ServerHarness) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await _signal_socket(server, http)
        for _ in range(RATE_MAX + 5):
            await ws.send_str(json.dumps({"type": "ping"}))
        codes = []
        for _ in range(RATE_MAX + 10):
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data["type"] == "error":
                codes.append(data["code"])
        assert "rate_limited" in codes
        assert ws.closed and ws.close_code == 1008


async def _raw_request(server: ServerHarness, method: str, path: str, headers: bytes = b"") -> tuple[int, dict]:
    """One request over a bare socket (headers as raw bytes, which no HTTP client would send)."""
    reader, writer = await _open(server)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
                     + headers + b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, (json.loads(body) if body.strip().startswith(b"{") else {})


@pytest.mark.parametrize("token", [b"\xff\xfe\xfa", b"pk_\xc3\x28", b"ct_\xe2\x82", "ct_é".encode()])
async def test_a_bearer_of_raw_bytes_is_401_everywhere(server: ServerHarness, token: bytes) -> None:
    _, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    header = b"Authorization: Bearer " + token + b"\r\n"
    for method, path in (("GET", "/v1/sites"), ("GET", f"/v1/sessions/{created['id']}"),
                         ("POST", "/v1/sessions"), ("POST", "/v1/sessions/connect"), ("GET", "/v1/avatars"),
                         ("DELETE", f"/v1/sessions/{created['id']}")):
        status, body = await _raw_request(server, method, path, header)
        assert status == 401 and body["error"]["code"] == "unauthorized", (method, path, status, body)
    status, body = await _raw_request(server, "GET", "/engine/v1/avatars", header + b"X-Runway-Version: 2024-11-06\r\n")
    assert status == 401 and "error" in body, body
    _, rec = await server.admin("GET", f"/v1/sessions/{created['id']}")
    assert rec["status"] != "ENDED"  # none of it ended the session


async def test_ids_that_are_not_uuids_are_404_not_redis_errors(server: ServerHarness) -> None:
    _, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    _, site = await server.admin("POST", "/v1/sites", {
        "name": "Shop", "allowedOrigins": ["https://shop.example"], "avatarIds": ["cooking-teacher"],
        "maxConcurrentSessions": 2})
    # ids that land on other keys of the same record (its lease, its active set) if used unchecked
    for method, path in (("GET", f"/v1/sessions/{created['id']}:lease"),
                         ("DELETE", f"/v1/sessions/{created['id']}:consumed"),
                         ("GET", f"/v1/sites/{site['id']}:active"), ("PATCH", f"/v1/sites/{site['id']}:active"),
                         ("DELETE", f"/v1/sites/{site['id']}:active"),
                         ("POST", f"/v1/sites/{site['id']}:active/rotate-key")):
        status, body = await server.admin(method, path, {} if method == "PATCH" else None)
        assert status == 404 and body["error"]["code"] in ("session_not_found", "site_not_found"), (path, body)
    for cursor in ("nan", "inf", "-inf", "x"):
        status, body = await server.admin("GET", f"/v1/sessions?cursor={cursor}")
        assert status == 422 and body["error"]["field"] == "cursor", (cursor, body)
    await server.admin("DELETE", f"/v1/sessions/{created['id']}")
