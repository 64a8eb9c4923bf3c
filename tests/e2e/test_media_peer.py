"""The engine's media peer, aiortc to aiortc: real ICE/DTLS/SRTP/SCTP over loopback."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from avatar_server.engine.errors import BadRequest, Conflict
from avatar_server.engine.http.rtc import add_rtc_routes
from avatar_server.engine.media import MediaManager, StaticKnowledge
from tests.e2e.rtc_helpers import RtcClient, connect, use_loopback_candidates

pytestmark = pytest.mark.timeout(90)

DOCS = [
    (
        "returns.md",
        "# Refunds\n\nRefunds are paid back to the original card within 30 days of the return "
        "being received at our warehouse.\n\n# Shipping\n\nStandard shipping takes 3 to 5 business "
        "days. Express shipping arrives the next working day.",
    ),
    ("hours.txt", "Our support desk is open Monday to Friday from 9am to 6pm Central European Time."),
]
START_SCRIPT = "Hello! I am the Acme helper."


class Recorder:
    """on_connected / on_closed callbacks, observable by tests."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed_calls = 0

    def on_connected(self) -> None:
        self.connected.set()

    def on_closed(self, reason: str) -> None:
        self.closed_calls += 1
        if not self.closed.done():
            self.closed.set_result(reason)


@pytest.fixture
async def manager(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MediaManager]:
    use_loopback_candidates(monkeypatch)
    m = MediaManager(knowledge=StaticKnowledge(documents=DOCS))
    yield m
    await m.close()


async def start(
    manager: MediaManager,
    session_id: str,
    *,
    avatar: dict[str, Any] | None = None,
    start_script: str | None = START_SCRIPT,
    personality: str | None = "A cheerful support agent for Acme.",
) -> tuple[RtcClient, Recorder]:
    rec = Recorder()

    async def answer(offer: dict[str, str]) -> dict[str, str]:
        return await manager.answer(
            session_id,
            offer,
            avatar=avatar or {"type": "runway-preset", "presetId": "human-resource"},
            personality=personality,
            start_script=start_script,
            on_connected=rec.on_connected,
            on_closed=rec.on_closed,
        )

    client = await connect(answer)
    await asyncio.wait_for(rec.connected.wait(), 20)
    return client, rec


def _digest(luma: np.ndarray) -> str:
    return hashlib.sha1((luma // 16).tobytes()).hexdigest()


async def test_video_is_512_square_and_alive(manager: MediaManager) -> None:
    client, _ = await start(manager, "s-video", start_script="")
    try:
        await client.wait_for(lambda: len(client.video) >= 40)
        assert {(v.width, v.height) for v in client.video} == {(512, 512)}
        # idle motion: frames over ~1.5 s are not all the same picture
        assert len({_digest(v.luma) for v in client.video}) > 3
        first = client.video[0].luma.astype(np.float32)
        assert max(float(np.abs(v.luma - first).mean()) for v in client.video) > 1.5
        # a portrait, not a blank frame
        assert float(client.video[-1].luma.std()) > 10
    finally:
        await client.close()


async def test_start_script_is_spoken_and_transcribed(manager: MediaManager) -> None:
    client, _ = await start(manager, "s-start")
    try:
        await client.wait_for(lambda: START_SCRIPT in client.transcripts("assistant"))
        await client.wait_for(lambda: any(level > 0.02 for level in client.audio_levels))
        peer = manager.peer("s-start")
        assert peer is not None
        # the mouth/glow follows the avatar's own voice: the level was non-zero while it spoke
        await peer.audio.wait_idle()
        assert peer.audio.utterances_played == 1
    finally:
        await client.close()


async def test_text_message_gets_a_grounded_reply(manager: MediaManager) -> None:
    client, _ = await start(manager, "s-chat", start_script="")
    try:
        await client.wait_open()
        client.send({"type": "user_message", "text": "How long does a refund take?"})
        await client.wait_for(lambda: len(client.transcripts("assistant")) >= 1)
        assert client.transcripts("user") == ["How long does a refund take?"]
        reply = client.transcripts("assistant")[0]
        assert "30 days" in reply
        assert reply.startswith("Great question!")  # the cheerful personality's lead-in

        client.send({"type": "chat", "text": "When is the support desk open?"})
        await client.wait_for(lambda: len(client.transcripts("assistant")) >= 2)
        assert "Monday to Friday" in client.transcripts("assistant")[1]

        client.send({"type": "user_message", "text": "What is the capital of Mongolia?"})
        await client.wait_for(lambda: len(client.transcripts("assistant")) >= 3)
        unrelated = client.transcripts("assistant")[2]
        assert "couldn't find anything" in unrelated
        assert "30 days" not in unrelated and "Monday" not in unrelated
        # replies are spoken too
        await client.wait_for(lambda: any(level > 0.02 for level in client.audio_levels))
    finally:
        await client.close()


async def test_visitor_mic_gives_the_listening_cue(manager: MediaManager) -> None:
    client, _ = await start(manager, "s-mic", start_script="")
    try:
        peer = manager.peer("s-mic")
        assert peer is not None
        await client.wait_for(lambda: len(client.video) >= 5)
        assert not peer.mic.listening
        client.mic.talking = True
        await client.wait_for(lambda: peer.mic.listening, timeout=10)
        # the green dot in the top-right corner of the picture
        await client.wait_for(lambda: _greenish(client.video[-1].rgb_corner), timeout=10)
        client.mic.talking = False
        await client.wait_for(lambda: not peer.mic.listening, timeout=10)
    finally:
        await client.close()


def _greenish(rgb: tuple[float, float, float]) -> bool:
    r, g, b = rgb
    return g > r + 40 and g > b + 20


async def test_end_call_closes_the_peer_and_reports_it(manager: MediaManager) -> None:
    client, rec = await start(manager, "s-end", start_script="")
    try:
        await client.wait_open()
        assert manager.active_count() == 1
        client.send({"type": "END_CALL"})
        assert await asyncio.wait_for(rec.closed, 10) == "end_call"
        assert manager.active_count() == 0
        assert rec.closed_calls == 1
    finally:
        await client.close()


async def test_visitor_hanging_up_closes_the_peer(manager: MediaManager) -> None:
    client, rec = await start(manager, "s-hangup", start_script="")
    await client.close()
    assert await asyncio.wait_for(rec.closed, 30) in ("remote_closed", "failed")
    assert manager.active_count() == 0


async def test_close_is_idempotent_and_reports_once(manager: MediaManager) -> None:
    client, rec = await start(manager, "s-close", start_script="")
    try:
        assert await manager.close_session("s-close") is True
        assert await manager.close_session("s-close") is False
        assert rec.closed.result() == "server"
        await manager.close()
        await manager.close()
        assert rec.closed_calls == 1
        with pytest.raises(Conflict):
            await manager.answer(
                "s-new",
                {"sdp": "v=0", "type": "offer"},
                avatar={},
                personality=None,
                start_script=None,
                on_connected=lambda: None,
                on_closed=lambda reason: None,
            )
    finally:
        await client.close()


async def test_two_sessions_at_once_and_one_peer_per_session(manager: MediaManager) -> None:
    (a, _), (b, _) = await asyncio.gather(
        start(
            manager, "s-a", start_script="", avatar={"type": "runway-preset", "presetId": "tennis-coach"}
        ),
        start(
            manager, "s-b", start_script="", avatar={"type": "runway-preset", "presetId": "cat-character"}
        ),
    )
    try:
        assert manager.active_count() == 2
        await a.wait_for(lambda: len(a.video) >= 10)
        await b.wait_for(lambda: len(b.video) >= 10)
        # different presets, different faces
        assert _digest(a.video[-1].luma) != _digest(b.video[-1].luma)
        second = RtcClient()
        try:
            with pytest.raises(Conflict):
                await manager.answer(
                    "s-a",
                    await second.offer(),
                    avatar={},
                    personality=None,
                    start_script=None,
                    on_connected=lambda: None,
                    on_closed=lambda reason: None,
                )
        finally:
            await second.close()
        assert manager.active_count() == 2
    finally:
        await a.close()
        await b.close()


async def test_unusable_offer_is_a_bad_request_and_can_be_retried(manager: MediaManager) -> None:
    calls: list[str] = []
    kwargs: dict[str, Any] = dict(
        avatar={},
        personality=None,
        start_script=None,
        on_connected=lambda: None,
        on_closed=calls.append,
    )
    with pytest.raises(BadRequest):
        await manager.answer("s-bad", {"sdp": "hello", "type": "offer"}, **kwargs)
    with pytest.raises(BadRequest):
        await manager.answer("s-bad", {"sdp": "v=0\r\n", "type": "answer"}, **kwargs)
    audio_only = RTCOnlyAudio()
    try:
        with pytest.raises(BadRequest):
            await manager.answer("s-bad", await audio_only.offer(), **kwargs)
    finally:
        await audio_only.close()
    assert calls == [] and manager.active_count() == 0
    client = await connect(lambda offer: manager.answer("s-bad", offer, **kwargs))
    try:
        await client.wait_for(lambda: len(client.video) >= 1)
    finally:
        await client.close()


class RTCOnlyAudio(RtcClient):
    async def offer(self) -> dict[str, str]:  # no video m-line
        self.pc.addTrack(self.mic)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}


async def test_peer_that_never_connects_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    use_loopback_candidates(monkeypatch)
    manager = MediaManager(connect_timeout=0.5)
    rec = Recorder()
    client = RtcClient()
    try:
        await manager.answer(
            "s-timeout",
            await client.offer(),
            avatar={},
            personality=None,
            start_script=None,
            on_connected=rec.on_connected,
            on_closed=rec.on_closed,
        )
        # the answer is never applied by the client
        assert await asyncio.wait_for(rec.closed, 10) == "connect_timeout"
        assert manager.active_count() == 0 and not rec.connected.is_set()
    finally:
        await client.close()
        await manager.close()


# ---------------------------------------------------------------- over HTTP


class FakeSession:
    def __init__(self, sid: str, token: str) -> None:
        self.id = sid
        self.rtc_token = token
        self.avatar = {"type": "custom", "avatarId": "a1"}
        self.avatar_record = {
            "id": "a1",
            "name": "Ada",
            "voice": {"type": "runway-live-preset", "presetId": "clara"},
        }
        self.personality = "Formal and precise."
        self.start_script = "Good day."


async def test_offer_answer_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    use_loopback_candidates(monkeypatch)
    key = web.AppKey("media", MediaManager)
    sessions = {"s1": FakeSession("s1", "tok_" + "a" * 30)}
    events: list[tuple[str, ...]] = []
    app = web.Application()
    app[key] = MediaManager()

    async def cleanup(app: web.Application) -> None:
        await app[key].close()

    app.on_cleanup.append(cleanup)
    add_rtc_routes(
        app,
        manager_key=key,
        get_session=sessions.get,
        on_connected=lambda sid: events.append(("connected", sid)),
        on_closed=lambda sid, reason: events.append(("closed", sid, reason)),
    )
    server = TestServer(app)
    await server.start_server()
    url = server.make_url("/v1/rtc/s1")
    client = RtcClient()
    try:
        offer = await client.offer()
        async with aiohttp.ClientSession() as http:
            async with http.options(url) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
            async with http.post(url, json=offer) as r:
                assert r.status == 401 and "error" in await r.json()
            async with http.post(url, json=offer, headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            good = {"Authorization": "Bearer " + sessions["s1"].rtc_token}
            async with http.post(server.make_url("/v1/rtc/nope"), json=offer, headers=good) as r:
                assert r.status == 404
            async with http.post(url, data=b"not json", headers=good) as r:
                assert r.status == 400
            async with http.post(url, json=offer, headers=good) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            assert answer["type"] == "answer" and "a=candidate" in answer["sdp"]
            await client.accept(answer)
            await client.wait_for(lambda: "Good day." in client.transcripts("assistant"))
            assert ("connected", "s1") in events
            async with http.post(url, json=offer, headers=good) as r:
                assert r.status == 409 and "already" in (await r.json())["error"]
            client.send({"type": "END_CALL"})
        assert await _eventually(lambda: ("closed", "s1", "end_call") in events)
    finally:
        await client.close()
        await server.close()


async def _eventually(predicate: Any, timeout: float = 10.0) -> bool:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)
    return True


async def test_a_session_that_ends_while_its_peer_is_built_gets_no_media() -> None:
    """The session is live when the offer arrives and has ended (cancelled, capped) by the time the
    peer is built: the peer is closed at once and the offer refused, so no media outlives it."""
    key = web.AppKey("media", MediaManager)
    session = FakeSession("s1", "tok_" + "b" * 30)
    looks: list[str] = []
    manager = MediaManager()
    closed: list[tuple[str, str]] = []

    def get_session(sid: str) -> Any:
        looks.append(sid)
        if len(looks) > 1:  # the second look, after the peer was built: the session is over
            raise web.HTTPConflict(text="ended")  # any exception counts as "not live"
        return session

    app = web.Application()
    app[key] = manager
    add_rtc_routes(app, manager_key=key, get_session=get_session, on_connected=lambda sid: None,
                   on_closed=lambda sid, reason: closed.append((sid, reason)))
    server = TestServer(app)
    await server.start_server()
    client = RtcClient()
    try:
        offer = await client.offer()
        async with aiohttp.ClientSession() as http:
            async with http.post(server.make_url("/v1/rtc/s1"), json=offer,
                                 headers={"Authorization": "Bearer " + session.rtc_token}) as r:
                assert r.status == 409, await r.text()
        assert looks == ["s1", "s1"]
        assert manager.active_count() == 0 and manager.peer("s1") is None
        assert closed == [("s1", "server")]
    finally:
        await client.close()
        await server.close()
        await manager.close()
