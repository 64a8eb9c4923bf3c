"""Backend tools end to end on the local engine (issue 12, step 3): an aiortc visitor asks → the engine's
avatar calls the tool over the engine's backend channel → the server (which called connect_backend once
the session started) POSTs {sessionId, siteId, tool, args} to a real aiohttp site backend on 127.0.0.1,
signed like webhooks (checked with the ``standardwebhooks`` library) → the reply carries the result. A
backend that answers 500 or times out gives the avatar an error result, and the next call still works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ..harness import ServerHarness, fast_engine_config, make_settings
from ..site_backend import SignedSiteBackend, backend_tool
from .rtc_helpers import connect_over_http, use_loopback_candidates

pytestmark = pytest.mark.timeout(90)

ORIGIN = "https://shop.example.com"


@pytest.fixture
async def tools_server(redis_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                       ) -> AsyncIterator[ServerHarness]:
    use_loopback_candidates(monkeypatch)
    h = await ServerHarness(make_settings(data_dir, redis_url, allow_private_targets=True),
                            fast_engine_config()).start()
    try:
        yield h
    finally:
        await h.stop_all()


async def test_a_visitor_asks_and_the_site_backend_answers(tools_server: ServerHarness) -> None:
    server = tools_server
    async with SignedSiteBackend() as backend:
        status, site = await server.admin("POST", "/v1/sites", {
            "name": "Shop", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 2, "tools": [
                backend_tool("lookup_order", "orderId", backend.url),
                backend_tool("check_stock", "item", backend.url),
                backend_tool("track_parcel", "parcelId", backend.url, timeout=0.5)]})
        assert status == 201, site
        backend.secret = site["webhookSecret"]
        before = (await server.control("GET", "/stats"))["requests"].get("connect_backend", 0)
        async with aiohttp.ClientSession() as http:
            status, creds, _ = await server.call("POST", "/v1/sessions/connect", token=site["publishableKey"],
                                                 headers={"Origin": ORIGIN},
                                                 json_body={"avatarId": "cooking-teacher", "maxDuration": 60})
            assert status == 200 and creds["transport"] == "webrtc", creds
            client = await connect_over_http(http, creds["serverUrl"], creds["token"])
            try:
                await client.wait_open()

                async def ask(text: str, expect: str) -> str:
                    seen = len(client.transcripts("assistant"))
                    client.send({"type": "user_message", "text": text})
                    await client.wait_for(lambda: any(expect in t for t in client.transcripts("assistant")[seen:]),
                                          timeout=20)
                    return next(t for t in client.transcripts("assistant")[seen:] if expect in t)

                reply = await ask("Please look up order 1234", "shipped")
                assert "1234" in reply, reply
                assert backend.calls[0] == {"sessionId": creds["sessionId"], "siteId": site["id"],
                                            "tool": "lookup_order", "args": {"orderId": "1234"}}
                assert backend.bad_signatures == 0
                reply = await ask("check stock kettle", "Sorry")
                assert "HTTP 500" in reply, reply
                reply = await ask("track parcel 77", "Sorry")
                assert "did not answer within 0.5 s" in reply, reply
                # nothing broke: the next call is answered, the session is still running
                reply = await ask("look up order 99", "shipped")
                assert "99" in reply
                _, rec = await server.admin("GET", f"/v1/sessions/{creds['sessionId']}")
                assert rec["status"] == "RUNNING", rec
                # every call is in the transcript as Runway records it (toolCalls / toolResults)
                status, conv, _ = await server.call(
                    "GET", f"/engine/v1/avatar_conversations/{rec['upstreamId']}", token=server.settings.admin_token,
                    headers={"X-Runway-Version": "2024-11-06"})
                assert status == 200, conv
                tool_turns = [t for t in conv["transcript"] if t.get("toolCalls")]
                assert [t["toolCalls"][0]["name"] for t in tool_turns] == [
                    "lookup_order", "check_stock", "track_parcel", "lookup_order"], tool_turns
                assert tool_turns[0]["toolCalls"][0]["arguments"] == {"orderId": "1234"}
                assert tool_turns[0]["toolResults"][0]["result"]["status"] == "shipped"
                assert "HTTP 500" in tool_turns[1]["toolResults"][0]["error"]
                status, text, _ = await server.call("GET", "/metrics", token=server.settings.admin_token)
                assert status == 200
                text = text if isinstance(text, str) else str(text)
                assert 'avatar_server_tool_calls_total{outcome="ok"} 2.0' in text, text
                assert 'avatar_server_tool_calls_total{outcome="error"} 1.0' in text
                assert 'avatar_server_tool_calls_total{outcome="timeout"} 1.0' in text
                assert "avatar_server_tool_call_seconds_count 4.0" in text
                stats = await server.control("GET", "/stats")
                assert stats["requests"].get("connect_backend", 0) == before + 1, stats  # once per session
            finally:
                await client.close()
        await server.admin("DELETE", f"/v1/sessions/{creds['sessionId']}")
        # an admin start without tools: no connect_backend
        status, plain = await server.admin("POST", "/v1/sessions/connect",
                                           {"avatarId": "cooking-teacher", "maxDuration": 30})
        assert status == 200, plain
        await asyncio.sleep(0.3)
        assert (await server.control("GET", "/stats"))["requests"].get("connect_backend", 0) == before + 1
        await server.admin("DELETE", f"/v1/sessions/{plain['sessionId']}")
