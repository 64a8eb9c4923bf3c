"""A custom avatar end to end on the standalone engine: catalog → realtime session → consume →
aiortc visitor. The avatar's own image is the video, its startScript is spoken, and a question on
the data channel is answered from the document linked to it (and only from that one)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.catalog_helpers import VERSION, avatar_body, call, png_uri, wait_status
from tests.e2e.rtc_helpers import connect_over_http, use_loopback_candidates
from tests.harness import EngineHarness

pytestmark = pytest.mark.timeout(90)

LINKED = ("lighthouse.md", "# Visiting\n\nThe Harbour Lighthouse museum is open on Saturdays from 10am to 4pm. "
          "Admission for children under twelve is free.")
UNLINKED = ("secret.md", "The staff parking code is 4417 and the vault opens at midnight.")


async def _session(engine: EngineHarness, avatar_id: str) -> dict[str, Any]:
    status, created = await call(engine, "POST", "/v1/realtime_sessions",
                                 {"model": "gwm1_avatars", "avatar": {"type": "custom", "avatarId": avatar_id}})
    assert status == 200, created
    for _ in range(300):
        _, session = await call(engine, "GET", f"/v1/realtime_sessions/{created['id']}")
        if session["status"] == "READY":
            return session
        await asyncio.sleep(0.05)
    raise AssertionError(f"session never READY: {session}")


async def test_custom_avatar_speaks_its_script_shows_its_image_and_answers_from_its_document(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_loopback_candidates(monkeypatch)
    _, linked = await call(engine, "POST", "/v1/documents", {"name": LINKED[0], "content": LINKED[1]})
    await call(engine, "POST", "/v1/documents", {"name": UNLINKED[0], "content": UNLINKED[1]})
    _, avatar = await call(engine, "POST", "/v1/avatars", avatar_body(
        name="Captain Ada", referenceImage=png_uri((200, 40, 180), (320, 240)),
        personality="A formal and precise harbour guide.", startScript="Good day, I am Captain Ada.",
        documentIds=[linked["id"]],
    ))
    await wait_status(engine, avatar["id"], "READY")
    session = await _session(engine, avatar["id"])

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{engine.base}/v1/realtime_sessions/{session['id']}/consume",
                             headers={"Authorization": f"Bearer {session['sessionKey']}", **VERSION}) as r:
            assert r.status == 200, await r.text()
            credentials = await r.json()

        client = await connect_over_http(http, credentials["url"], credentials["token"])
        try:
            await client.wait_for(lambda: "Good day, I am Captain Ada." in client.transcripts("assistant"))
            # the video is the avatar's magenta reference image, not a generated face (nor the green
            # listening cue: the visitor's mic is silent)
            await client.wait_for(lambda: len(client.video) >= 10)
            frame = client.video[-1]
            assert (frame.width, frame.height) == (512, 512)
            assert float(np.asarray(client.video[-1].luma).std()) < 25  # a flat photo, not a drawn face
            r, g, b = client.video[-1].rgb_corner
            assert r > g + 50 and b > g + 50, (r, g, b)

            client.send({"type": "user_message", "text": "When is the lighthouse museum open?"})
            await client.wait_for(lambda: len(client.transcripts("assistant")) >= 2)
            reply = client.transcripts("assistant")[1]
            assert "Saturdays from 10am to 4pm" in reply, reply
            assert reply.startswith("Certainly.")  # the avatar's own (formal) personality

            client.send({"type": "user_message", "text": "What is the staff parking code?"})
            await client.wait_for(lambda: len(client.transcripts("assistant")) >= 3)
            assert "4417" not in client.transcripts("assistant")[2]  # an unlinked document is not knowledge
            client.send({"type": "END_CALL"})
            for _ in range(200):
                _, state = await call(engine, "GET", f"/v1/realtime_sessions/{session['id']}")
                if state["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.05)
            assert state["status"] == "COMPLETED"
        finally:
            await client.close()
