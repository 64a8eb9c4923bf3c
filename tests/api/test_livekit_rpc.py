"""Backend tools over Runway's channel, a LiveKit room (issue 12, step 3, Runway side).

No LiveKit server runs on these machines, so the room itself is never joined here. What is tested:

- the RPC handler (``tools/livekit_rpc.rpc_handler``) against the ``livekit`` SDK's own types: real
  ``livekit.rtc.RpcInvocationData`` objects in, the JSON result or a real ``livekit.rtc.RpcError`` out,
  with the call going to a real aiohttp site backend on 127.0.0.1 that verifies every signature with
  ``standardwebhooks``;
- the server in Runway mode against the separately started engine: ``connect_backend`` once per
  session with backend tools and none without; and when its answer is LiveKit credentials (the engine's
  own answer is rewritten to a LiveKit-style ``{url, token, roomName}``), a room that cannot be joined
  (nothing listening, or a listener that never answers) ends the channel within the bounded connect
  timeout, while the session, its cap and other sessions go on untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import rtc

from avatar_server import appkeys as K
from avatar_server.models.sessions import SessionRecord, SessionStatus
from avatar_server.store.embedded import free_port
from avatar_server.tools import SiteBackend, ToolHandler, livekit_rpc
from avatar_server.tools.livekit_rpc import APPLICATION_ERROR, REFUSED_CALLER, rpc_handler

from ..harness import EngineHarness, ServerHarness
from ..site_backend import SignedSiteBackend, backend_tool

pytestmark = pytest.mark.timeout(90)


def invocation(caller: str, payload: str, method: str = "lookup_order") -> rtc.RpcInvocationData:
    """What the SDK hands a registered method: (request_id, caller_identity, payload, response_timeout)."""
    return rtc.RpcInvocationData(f"req-{os.urandom(4).hex()}", caller, payload, 10.0, method=method)


@pytest.fixture
async def site() -> AsyncIterator[tuple[SignedSiteBackend, SessionRecord, Any]]:
    """A site backend, a session of its site with three backend tools, and the handle the service
    passes the LiveKit hook (ToolHandler.handle bound to the session)."""
    async with SignedSiteBackend() as app:
        backend = SiteBackend(allow_private=True)
        outcomes: list[tuple[str, str]] = []

        async def secret_of(site_id: str) -> str | None:
            return app.secret if site_id == "site_1" else None

        handler = ToolHandler(backend, secret_of, observe=lambda tool, outcome, _s: outcomes.append((tool, outcome)))
        rec = SessionRecord(id="sess_1", status=SessionStatus.RUNNING, avatar={"type": "runway-preset",
                            "presetId": "cooking-teacher"}, maxDuration=60, createdAt=time.time(),
                            siteId="site_1", upstreamId="up_1",
                            tools=[backend_tool("lookup_order", "orderId", app.url),
                                   backend_tool("check_stock", "item", app.url),
                                   backend_tool("track_parcel", "parcelId", app.url, timeout=0.5)])

        async def handle(method: str, identity: str, payload: str) -> str:
            return await handler.handle(rec, method, identity, payload)

        handle.outcomes = outcomes  # type: ignore[attr-defined]
        try:
            yield app, rec, handle
        finally:
            await backend.close()


async def test_a_worker_caller_gets_the_site_backends_result(site: Any) -> None:
    app, rec, handle = site
    on_call = rpc_handler("lookup_order", handle)
    answer = await on_call(invocation("worker:agent-7", json.dumps({"args": {"orderId": "1234"}})))
    assert json.loads(answer) == {"status": "shipped", "orderId": "1234"}
    # the arguments as the whole payload (Runway's Node handler accepts both)
    answer = await on_call(invocation("worker:agent-7", json.dumps({"orderId": "99"})))
    assert json.loads(answer) == {"status": "shipped", "orderId": "99"}
    assert app.calls == [
        {"sessionId": rec.id, "siteId": "site_1", "tool": "lookup_order", "args": {"orderId": "1234"}},
        {"sessionId": rec.id, "siteId": "site_1", "tool": "lookup_order", "args": {"orderId": "99"}}]
    assert app.bad_signatures == 0
    assert handle.outcomes == [("lookup_order", "ok"), ("lookup_order", "ok")]


async def test_a_caller_that_is_not_the_worker_is_refused(site: Any) -> None:
    app, _rec, handle = site
    on_call = rpc_handler("lookup_order", handle)
    for caller in ("visitor-1", "", "Worker:agent", "agent-worker:1"):
        with pytest.raises(rtc.RpcError) as err:
            await on_call(invocation(caller, json.dumps({"args": {"orderId": "1234"}})))
        assert err.value.code == REFUSED_CALLER and "worker" in err.value.message, caller
    assert app.calls == []  # the site's backend never heard of them
    assert {outcome for _, outcome in handle.outcomes} == {"refused"}


async def test_a_malformed_payload_is_an_application_error(site: Any) -> None:
    app, _rec, handle = site
    on_call = rpc_handler("lookup_order", handle)
    for payload, message in (("{not json", "not JSON"), ("[1, 2]", "not a JSON object"),
                             ('"1234"', "not a JSON object"), ('{"args": 5}', "args is not a JSON object"),
                             ("x" * 70_000, "too large")):
        with pytest.raises(rtc.RpcError) as err:
            await on_call(invocation("worker:agent-7", payload))
        assert err.value.code == APPLICATION_ERROR == 1500, payload[:20]
        assert message in err.value.message, (payload[:20], err.value.message)
    assert app.calls == []


async def test_a_failing_or_slow_site_backend_maps_to_an_rpc_error(site: Any) -> None:
    app, _rec, handle = site
    with pytest.raises(rtc.RpcError) as err:
        await rpc_handler("check_stock", handle)(invocation("worker:a", '{"args": {"item": "kettle"}}', "check_stock"))
    assert err.value.code == APPLICATION_ERROR and "HTTP 500" in err.value.message, err.value.message
    started = time.monotonic()
    with pytest.raises(rtc.RpcError) as err:
        await rpc_handler("track_parcel", handle)(invocation("worker:a", '{"args": {"parcelId": "7"}}', "track_parcel"))
    assert time.monotonic() - started < 2.0  # the tool's timeoutSeconds (0.5), not the backend's 3 s
    assert err.value.code == APPLICATION_ERROR and "did not answer within 0.5 s" in err.value.message
    # a tool the session does not have (registered by mistake) is refused, not forwarded
    with pytest.raises(rtc.RpcError) as err:
        await rpc_handler("open_ticket", handle)(invocation("worker:a", "{}", "open_ticket"))
    assert err.value.code == APPLICATION_ERROR and "open_ticket" in err.value.message
    # and the next call works
    answer = await rpc_handler("lookup_order", handle)(invocation("worker:a", '{"args": {"orderId": "5"}}'))
    assert json.loads(answer)["orderId"] == "5"
    assert [outcome for _, outcome in handle.outcomes] == ["error", "timeout", "refused", "ok"]
    assert app.bad_signatures == 0


async def test_an_unexpected_failure_is_an_application_error_without_details() -> None:
    async def broken(method: str, identity: str, payload: str) -> str:
        raise RuntimeError("internal detail")

    with pytest.raises(rtc.RpcError) as err:
        await rpc_handler("lookup_order", broken)(invocation("worker:a", "{}"))
    assert err.value.code == APPLICATION_ERROR and err.value.message == "the tool failed"


# -- the server in Runway mode ----------------------------------------------------------------------


async def connect_backend_calls(engine: EngineHarness) -> int:
    return int((await engine.control("GET", "/stats"))["requests"].get("connect_backend", 0))


async def test_runway_mode_connects_the_backend_once_per_session_with_backend_tools(
        runway_server: ServerHarness, engine: EngineHarness) -> None:
    server = runway_server
    before = await connect_backend_calls(engine)
    status, plain = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    assert status == 200, plain
    status, client_only = await server.admin("POST", "/v1/sessions/connect", {
        "avatarId": "cooking-teacher", "tools": [{"type": "client_event", "name": "show_product",
                                                   "description": "Show a product", "parameters": []}]})
    assert status == 200, client_only
    status, with_tools = await server.admin("POST", "/v1/sessions/connect", {
        "avatarId": "cooking-teacher", "tools": [backend_tool("lookup_order", "orderId"),
                                                 backend_tool("check_stock", "item")]})
    assert status == 200, with_tools
    deadline = time.monotonic() + 5
    while await connect_backend_calls(engine) < before + 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # time for a second (wrong) call to show
    assert await connect_backend_calls(engine) == before + 1  # one session with backend tools, one call
    assert server.app is not None and server.app[K.TOOLS].holding() == 1
    for body in (plain, client_only, with_tools):
        status, ended = await server.admin("DELETE", f"/v1/sessions/{body['sessionId']}")
        assert status == 200, ended
    deadline = time.monotonic() + 5
    while server.app[K.TOOLS].holding() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.app[K.TOOLS].holding() == 0  # the channel is left when the session ends
    assert await connect_backend_calls(engine) == before + 1


def silent_listener() -> socket.socket:
    """A TCP port that accepts connections (the kernel's backlog) and never answers a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


async def test_runway_mode_a_livekit_room_that_cannot_be_joined_affects_nothing(
        runway_server: ServerHarness, engine: EngineHarness, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """connect_backend answers LiveKit credentials (the engine's answer, rewritten to what Runway's
    looks like); the room is unreachable. The join gives up within CONNECT_TIMEOUT, the session goes
    on; a join still hanging never delays the session's cap, and ending the session ends the join."""
    server = runway_server
    assert server.app is not None
    tools = server.app[K.TOOLS]
    assert tools.livekit is livekit_rpc.hold_room  # wired in app.py
    silent = silent_listener()
    refused_port = free_port()
    silent_url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
    targets = [f"ws://127.0.0.1:{refused_port}", silent_url, silent_url, silent_url]
    real_connect_backend = tools.upstream.connect_backend

    async def livekit_style(upstream_id: str) -> dict[str, Any]:
        creds = await real_connect_backend(upstream_id)  # the engine still counts it
        return {"url": targets.pop(0), "token": creds["token"], "roomName": creds["roomName"]}

    monkeypatch.setattr(tools.upstream, "connect_backend", livekit_style)
    caplog.set_level(logging.INFO, logger="avatar_server.tools")
    try:
        async def start(max_duration: int = 60) -> dict[str, Any]:
            status, body = await server.admin("POST", "/v1/sessions/connect", {
                "avatarId": "cooking-teacher", "maxDuration": max_duration,
                "tools": [backend_tool("lookup_order", "orderId")]})
            assert status == 200, body
            return body

        async def channel_gone(session_id: str, within: float) -> float:
            started = time.monotonic()
            while session_id in tools._held and time.monotonic() - started < within:
                await asyncio.sleep(0.02)
            assert session_id not in tools._held, f"the channel is still held after {within} s"
            return time.monotonic() - started

        # nothing listening: the join fails at once
        monkeypatch.setattr(livekit_rpc, "CONNECT_TIMEOUT", 1.0)
        first = await start()
        await channel_gone(first["sessionId"], within=5.0)
        assert any("could not join the session's LiveKit room" in r.getMessage() for r in caplog.records)
        # a listener that never answers: the join gives up at the bound
        second = await start()
        assert second["sessionId"] in tools._held
        took = await channel_gone(second["sessionId"], within=4.0)
        assert took < 3.0, took
        joins = [r.getMessage() for r in caplog.records if "could not join" in r.getMessage()]
        assert len(joins) == 2, joins
        for body in (first, second):  # the sessions went on
            rec = await server.wait_for(body["sessionId"], lambda r: r["status"] == "RUNNING", timeout=2)
            assert rec["endedAt"] is None
        # a join hanging longer than the session: the cap ends the session on time, and the join with it
        monkeypatch.setattr(livekit_rpc, "CONNECT_TIMEOUT", 60.0)
        capped_at = time.monotonic()
        capped = await start(max_duration=10)
        await asyncio.sleep(0.3)
        assert capped["sessionId"] in tools._held
        started = time.monotonic()
        other = await start()  # another session meanwhile: its start is not held up either
        assert time.monotonic() - started < 3.0
        rec = await server.wait_for(capped["sessionId"], lambda r: r["status"] == "ENDED", timeout=15)
        assert rec["endReason"] == "cap", rec
        assert time.monotonic() - capped_at < 10.0 + 2.5
        await channel_gone(capped["sessionId"], within=2.0)  # the hanging join ended with the session
        assert other["sessionId"] in tools._held
        assert await connect_backend_calls(engine) >= 3
        for body in (first, second, other):
            status, ended = await server.admin("DELETE", f"/v1/sessions/{body['sessionId']}")
            assert status == 200 and ended["endReason"] == "admin", ended
    finally:
        silent.close()
