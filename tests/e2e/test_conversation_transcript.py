"""A real conversation on the local engine: an aiortc visitor types two questions over the data
channel; the engine's conversation (Runway's shape) and the server's kept copy both have every turn,
in order, with timestamps."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from ..catalog_helpers import validate
from ..harness import ServerHarness
from .rtc_helpers import connect_over_http, use_loopback_candidates

VERSION = {"X-Runway-Version": "2024-11-06"}
QUESTIONS = ["How long should I knead bread dough?", "Thanks!"]


async def test_two_typed_questions_come_back_in_the_transcript(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_loopback_candidates(monkeypatch)
    status, creds = await server.admin("POST", "/v1/sessions", {
        "avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}, "maxDuration": 60,
        "startScript": "Hello, cook!",
    })
    assert status == 201, creds
    session_id = creds["id"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(creds["signalUrl"] + "?token=" + creds["clientToken"]) as ws:
            async for msg in ws:
                data = msg.json()
                if data["type"] == "credentials":
                    connected = data
                    break
            client = await connect_over_http(http, connected["serverUrl"], connected["token"])
            try:
                await client.wait_for(lambda: "Hello, cook!" in client.transcripts("assistant"))
                for n, question in enumerate(QUESTIONS, start=2):
                    client.send({"type": "user_message", "text": question})
                    await client.wait_for(lambda n=n: len(client.transcripts("assistant")) >= n)
                answers = client.transcripts("assistant")
                _, rec = await server.admin("GET", f"/v1/sessions/{session_id}")
                status, live, _ = await server.call("GET", f"/engine/v1/avatar_conversations/{rec['upstreamId']}",
                                                    token=server.settings.admin_token, headers=VERSION)
                assert status == 200 and live["status"] == "in_progress"
                validate(live, "/v1/avatar_conversations/{id}", "get")
                assert [t["content"] for t in live["transcript"]] == [answers[0], QUESTIONS[0], answers[1],
                                                                       QUESTIONS[1], answers[2]]
                client.send({"type": "END_CALL"})
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT or msg.json()["type"] == "ended":
                        break
            finally:
                await client.close()

    conv = await _conversation(server, session_id)
    assert conv["endReason"] == "upstream_completed" and conv["upstreamId"] == rec["upstreamId"]
    turns = conv["transcript"]
    assert [(t["role"], t["content"]) for t in turns] == [
        ("assistant", "Hello, cook!"), ("user", QUESTIONS[0]), ("assistant", answers[1]),
        ("user", QUESTIONS[1]), ("assistant", answers[2])]
    assert "bread dough" in answers[1].lower() and conv["turns"] == 5
    stamps = [datetime.fromisoformat(t["timestamp"].replace("Z", "+00:00")) for t in turns]
    assert stamps == sorted(stamps)
    started = datetime.fromisoformat(conv["startedAt"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(conv["endedAt"].replace("Z", "+00:00"))
    assert started <= stamps[0] and stamps[-1] <= ended
    assert conv["upstreamDurationSeconds"] is not None


async def _conversation(server: ServerHarness, session_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, last = await server.admin("GET", f"/v1/conversations/{session_id}")
        if status == 200 and last["status"] == "ended":
            return dict(last)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no ended conversation: {last}")
