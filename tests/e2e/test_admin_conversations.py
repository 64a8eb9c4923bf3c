"""The admin console's Conversations and Usage tabs and its custom voices, in real headless Chromium
against the server on its embedded defaults; each step checked on the page and in the API.

A real conversation (an aiortc visitor types a question) and two more sessions on two sites and the
admin lane make the data; the Conversations tab lists them, filters by site and by avatar, shows a
transcript and deletes one (ours and the engine's); the Usage tab draws one bar segment per site
and day and shows the upstream's figures beside ours; the avatar form previews a described voice
(a WAV the engine serves, played in the page), creates it and saves an avatar that uses it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from ..harness import ServerHarness
from .rtc_helpers import connect_over_http, use_loopback_candidates
from .test_admin_console import WAIT_MS, api, chromium_page, png_bytes, shot

pytestmark = pytest.mark.timeout(180)

ORIGINS = ("https://shop.example.com", "https://blog.example.com")
VERSION = {"X-Runway-Version": "2024-11-06"}
PROMPT = "A calm, deep British man's voice, warm and slow, like a museum guide."


async def site(server: ServerHarness, name: str, origin: str) -> dict[str, Any]:
    return dict(await api(server, "POST", "/v1/sites", {"name": name, "allowedOrigins": [origin],
                                                        "avatarIds": ["cooking-teacher", "cat-character"],
                                                        "maxConcurrentSessions": 5}))


async def short_session(server: ServerHarness, avatar: str, key: str | None = None, origin: str | None = None) -> str:
    status, body, _ = await server.call("POST", "/v1/sessions/connect", token=key or server.settings.admin_token,
                                        json_body={"avatarId": avatar}, headers={"Origin": origin} if origin else None)
    assert status == 200, body
    status, _, _ = await server.call("DELETE", f"/v1/sessions/{body['sessionId']}", token=body["clientToken"])
    assert status == 200
    return str(body["sessionId"])


async def talked_session(server: ServerHarness, key: str, origin: str) -> str:
    """A session on a site in which a visitor (aiortc) types one question and gets the answer."""
    status, creds, _ = await server.call("POST", "/v1/sessions", token=key, headers={"Origin": origin},
                                         json_body={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}})
    assert status == 201, creds
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(creds["signalUrl"] + "?token=" + creds["clientToken"]) as ws:
            async for msg in ws:
                data = msg.json()
                if data["type"] == "credentials":
                    break
            client = await connect_over_http(http, data["serverUrl"], data["token"])
            try:
                await client.wait_for(lambda: len(client.transcripts("assistant")) >= 1)
                client.send({"type": "user_message", "text": "How long should I knead bread dough?"})
                await client.wait_for(lambda: len(client.transcripts("assistant")) >= 2)
            finally:
                await client.close()
    await server.call("DELETE", f"/v1/sessions/{creds['id']}", token=creds["clientToken"])
    return str(creds["id"])


async def count_is(page: Any, selector: str, n: int) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while (found := await page.locator(selector).count()) != n:
        assert time.monotonic() < deadline, f"{selector}: {found} rows, not {n}"
        await asyncio.sleep(0.05)


async def until_kept(server: ServerHarness, ids: list[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        states = [(await server.admin("GET", f"/v1/conversations/{i}"))[1].get("status") for i in ids]
        if all(s == "ended" for s in states):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"conversations not kept: {states}")


async def test_conversations_usage_and_voices_in_the_console(server: ServerHarness,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    use_loopback_candidates(monkeypatch)
    shop, blog = await site(server, "Shop", ORIGINS[0]), await site(server, "Blog", ORIGINS[1])
    talked = await talked_session(server, shop["publishableKey"], ORIGINS[0])
    on_blog = await short_session(server, "cat-character", blog["publishableKey"], ORIGINS[1])
    by_admin = await short_session(server, "cooking-teacher")
    await until_kept(server, [talked, on_blog, by_admin])

    async with chromium_page() as (page, problems):
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(server.base + "/admin")
        await page.fill("#token", server.settings.admin_token)
        await page.click("#login-form button[type=submit]")
        await page.locator("#console").wait_for(state="visible", timeout=WAIT_MS)

        # --- conversations: all, then filtered by site and by avatar
        await page.click("#tab-btn-conversations")
        rows = page.locator("#conversations-table tbody tr")
        await count_is(page, "#conversations-table tbody tr", 3)
        assert [await r.get_attribute("data-id") for r in await rows.all()] == [by_admin, on_blog, talked]
        await page.select_option("#conversations-site", shop["id"])
        await count_is(page, "#conversations-table tbody tr", 1)
        assert await rows.first.get_attribute("data-id") == talked
        assert "Shop" in await rows.first.inner_text()
        await page.select_option("#conversations-site", "")
        await page.select_option("#conversations-avatar", "cat-character")
        await count_is(page, "#conversations-table tbody tr", 1)
        assert await rows.first.get_attribute("data-id") == on_blog
        await page.select_option("#conversations-avatar", "")
        await count_is(page, "#conversations-table tbody tr", 3)

        # --- a transcript
        await page.locator(f"#conversations-table tr[data-id='{talked}'] [data-action=read]").click()
        await page.locator("#transcript").wait_for(state="visible", timeout=WAIT_MS)
        turns = page.locator("#transcript-turns li")
        texts = [await t.inner_text() for t in await turns.all()]
        assert len(texts) >= 3 and "How long should I knead bread dough?" in texts[1] and "Visitor" in texts[1]
        assert "Avatar" in texts[2] and "bread dough" in texts[2].lower()
        await shot(page, "conversation")

        # --- delete one: gone here and at the engine
        _, kept = await server.admin("GET", f"/v1/conversations/{on_blog}")
        await page.locator(f"#conversations-table tr[data-id='{on_blog}'] [data-action=delete]").click()
        await count_is(page, "#conversations-table tbody tr", 2)
        assert "upstream: deleted" in await page.locator("#notice").inner_text()
        assert (await server.admin("GET", f"/v1/conversations/{on_blog}"))[0] == 404
        status, _, _ = await server.call("GET", f"/engine/v1/avatar_conversations/{kept['upstreamId']}",
                                         token=server.settings.admin_token, headers=VERSION)
        assert status == 404

        # --- usage: a bar segment per site and day, our figures beside the upstream's
        await page.click("#tab-btn-usage")
        await count_is(page, "#usage-chart rect", 3)
        segments = {await r.get_attribute("data-site"): await r.get_attribute("data-sessions")
                    for r in await page.locator("#usage-chart rect").all()}
        assert segments == {shop["id"]: "1", blog["id"]: "1", "admin": "1"}  # usage outlives a deleted conversation
        assert await page.locator("#usage-sessions").inner_text() == "3"
        assert "sessions" in await page.locator("#usage-upstream").inner_text()
        legend = await page.locator("#usage-legend").inner_text()
        assert "Shop" in legend and "Blog" in legend and "admin" in legend
        await shot(page, "usage")

        # --- a described voice: preview (played from the engine), create, an avatar that uses it
        await page.click("#tab-btn-avatars")
        await page.click("#avatar-new")
        await page.click("#voice-new summary")
        await page.fill("#avatar-form [name=voiceName]", "Guide")
        await page.fill("#avatar-form [name=voicePrompt]", PROMPT)
        await page.click("#voice-preview-btn")
        await page.locator("#voice-preview").wait_for(state="visible", timeout=WAIT_MS)
        duration = 0.0
        deadline = time.monotonic() + 10
        while not duration and time.monotonic() < deadline:  # the audio element loaded the engine's WAV
            duration = await page.locator("#voice-preview").evaluate("a => a.readyState >= 1 ? a.duration : 0")
            await asyncio.sleep(0.05)
        assert duration > 1.0
        await page.click("#voice-create-btn")
        voices: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not voices and time.monotonic() < deadline:
            voices = (await api(server, "GET", "/v1/voices"))["data"]
            await asyncio.sleep(0.05)
        assert [v["name"] for v in voices] == ["Guide"]
        assert await page.locator("#avatar-form [name=voice]").input_value() == f"custom:{voices[0]['id']}"
        await page.fill("#avatar-form [name=name]", "Museum guide")
        await page.fill("#avatar-form [name=personality]", "A calm museum guide.")
        await page.set_input_files("#avatar-form [name=imageFile]",
                                   files=[{"name": "face.png", "mimeType": "image/png", "buffer": png_bytes()}])
        await page.locator("#avatar-image-preview").wait_for(state="visible", timeout=WAIT_MS)
        await page.click("#avatar-form button[type=submit]")
        await page.locator("#avatars-table tbody tr", has_text="Museum guide").wait_for(timeout=WAIT_MS)
        avatars = (await api(server, "GET", "/v1/avatars"))["data"]
        assert avatars[0]["voice"]["type"] == "custom" and avatars[0]["voice"]["id"] == voices[0]["id"]
        assert not problems, problems
