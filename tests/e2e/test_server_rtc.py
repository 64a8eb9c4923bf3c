"""The whole chain with a real WebRTC peer (aiortc) instead of a browser: the admin creates a
document and an avatar through the server, a session is started through the server, its
credentials open media on the engine, a question is answered from the linked document, and
``END_CALL`` on the data channel ends the engine's session and, through it, the server's record."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from ..api.kb_helpers import wait_status
from ..catalog_helpers import avatar_body, png_uri
from ..harness import ServerHarness, upstream_final
from .rtc_helpers import connect_over_http, use_loopback_candidates

FAQ = ("Opening hours", "The harbour museum is open on Saturdays from 10am to 4pm. Tickets cost 8 euros.")


async def _ready_avatar(server: ServerHarness) -> str:
    status, doc = await server.admin("POST", "/v1/documents", {"name": FAQ[0], "content": FAQ[1]})
    assert status == 201, doc
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(
        name="Harbour guide", referenceImage=png_uri((30, 90, 200), (160, 120)),
        personality="A formal and precise harbour guide.", startScript="Welcome to the harbour.",
        documentIds=[doc["id"]],
    ))
    assert status == 201, avatar
    return str((await wait_status(server, avatar["id"], "READY"))["id"])


async def test_end_call_over_the_data_channel_ends_the_server_session(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_loopback_candidates(monkeypatch)
    avatar_id = await _ready_avatar(server)
    status, creds = await server.admin("POST", "/v1/sessions", {
        "avatar": {"type": "custom", "avatarId": avatar_id}, "maxDuration": 60,
    })
    assert status == 201, creds
    session_id = creds["id"]
    connected: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(creds["signalUrl"] + "?token=" + creds["clientToken"]) as ws:
            async for msg in ws:
                data = msg.json()
                if data["type"] == "credentials":
                    connected = data
                    break
            assert connected.get("transport") == "webrtc"
            _, rec = await server.admin("GET", f"/v1/sessions/{session_id}")
            up = await _upstream(server, rec["upstreamId"])
            assert up["status"] == "READY" and up["consumed"], up  # consumed; no media yet

            client = await connect_over_http(http, connected["serverUrl"], connected["token"])
            try:
                await client.wait_for(lambda: "Welcome to the harbour." in client.transcripts("assistant"))
                await client.wait_for(lambda: len(client.video) >= 5 and len(client.audio_levels) > 0)
                assert (await _upstream(server, rec["upstreamId"]))["status"] == "RUNNING"  # media flows
                client.send({"type": "user_message", "text": "When is the museum open?"})
                await client.wait_for(lambda: len(client.transcripts("assistant")) >= 2)
                assert "Saturdays from 10am to 4pm" in client.transcripts("assistant")[1]
                client.send({"type": "END_CALL"})
                ended: dict[str, Any] = {}
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = msg.json()
                    if data["type"] == "ended":
                        ended = data
                        break
                assert ended.get("reason") == "upstream_completed", ended
            finally:
                await client.close()
    rec = await server.wait_for(session_id, lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "upstream_completed"
    assert (await upstream_final(server.control, rec["upstreamId"]))["status"] == "COMPLETED"


async def _upstream(server: ServerHarness, upstream_id: str) -> dict[str, Any]:
    return {s["id"]: s for s in await server.control("GET", "/sessions")}[upstream_id]


async def test_the_cap_closes_a_live_media_peer(server: ServerHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """With media flowing, the server's cap cancels the upstream session and the engine closes
    the peer: frames stop, the data channel closes."""
    use_loopback_candidates(monkeypatch)
    await server.control("PATCH", "/config", {"honourMaxDuration": False})  # only the server's cap ends it
    status, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher",
                                                                        "maxDuration": 10})
    assert status == 200, body
    async with aiohttp.ClientSession() as http:
        client = await connect_over_http(http, body["serverUrl"], body["token"])
        try:
            await client.wait_for(lambda: len(client.video) >= 5)
            rec = await server.wait_for(body["sessionId"], lambda r: r["status"] == "ENDED", timeout=20)
            assert rec["endReason"] == "cap"
            assert (await upstream_final(server.control, rec["upstreamId"]))["status"] == "CANCELLED"
            assert client.video_frames_received > 5
            await asyncio.sleep(1.0)  # the engine's peer closes right after the cancel
            frames = client.video_frames_received
            await asyncio.sleep(1.5)
            assert client.video_frames_received == frames  # no more media after the cap
            assert client.channel.readyState == "closed"
        finally:
            await client.close()
