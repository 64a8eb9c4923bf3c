"""Custom voices (``/v1/voices``) on both upstreams: validated first, passed through, the engine's
answers checked against Runway's OpenAPI; a described voice maps to an espeak-ng voice that an
avatar's session speaks in; previews are WAVs the engine serves."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from typing import Any

import aiohttp

from avatar_server.engine import ENGINE_STATE
from avatar_server.engine.media.speech import Voice
from avatar_server.engine.voices import describe

from ..catalog_helpers import validate
from ..harness import EngineHarness, ServerHarness
from .kb_helpers import Upstream, avatar_body, wait_status

PROMPT = "A calm, deep British man's voice, warm and slow, like a museum guide."
TEXT_VOICE = {"name": "Guide", "description": "For the museum", "from": {"type": "text", "prompt": PROMPT,
                                                                          "model": "eleven_ttv_v3"}}


async def wait_voice(server: ServerHarness, voice_id: str, status: str = "READY", timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        code, last = await server.admin("GET", f"/v1/voices/{voice_id}")
        assert code == 200, last
        if last["status"] == status:
            return dict(last)
        await asyncio.sleep(0.05)
    raise AssertionError(f"voice never {status}: {last}")


async def fetch_wav(url: str) -> tuple[int, float]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:  # no credential: the URL is one
        assert resp.status == 200 and resp.content_type == "audio/wav", resp.status
        data = await resp.read()
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnframes() / w.getframerate()


async def test_voice_lifecycle(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    status, voice = await server.admin("POST", "/v1/voices", TEXT_VOICE)
    assert status == 201, voice
    assert voice["status"] == "PROCESSING" and voice["name"] == "Guide" and voice["description"] == "For the museum"
    assert voice["previewUrl"] is None and voice["failureReason"] is None
    ready = await wait_voice(server, voice["id"])
    assert ready["previewUrl"].startswith("http") and ready["previewUrl"].endswith(".wav")
    rate, seconds = await fetch_wav(ready["previewUrl"])
    assert rate == 48_000 and seconds > 1.0

    code, theirs = await upstream.call("GET", f"/v1/voices/{voice['id']}")  # the upstream's own shape
    assert code == 200
    validate(theirs, "/v1/voices/{id}", "get")
    code, page = await upstream.call("GET", "/v1/voices?limit=10")
    validate(page, "/v1/voices", "get")

    status, listed = await server.admin("GET", "/v1/voices?limit=10")
    assert status == 200 and [v["id"] for v in listed["data"]] == [voice["id"]] and listed["hasMore"] is False
    status, renamed = await server.admin("PATCH", f"/v1/voices/{voice['id']}", {"name": "Harbour guide"})
    assert status == 200 and renamed["name"] == "Harbour guide" and renamed["status"] == "READY"
    validate({k: v for k, v in renamed.items() if k != "failureReason"}, "/v1/voices/{id}", "patch")

    # an avatar uses it
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(voice={"type": "custom",
                                                                                 "id": voice["id"]}))
    assert status == 201, avatar
    ready_avatar = await wait_status(server, avatar["id"], "READY")
    assert ready_avatar["voice"]["type"] == "custom" and ready_avatar["voice"]["id"] == voice["id"]

    assert (await server.admin("DELETE", f"/v1/voices/{voice['id']}"))[0] == 204
    status, gone = await server.admin("GET", f"/v1/voices/{voice['id']}")
    assert status == 404 and gone["error"]["code"] == "voice_not_found"
    assert (await server.admin("DELETE", f"/v1/voices/{voice['id']}"))[0] == 404


async def test_bodies_are_checked_before_the_upstream(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    audio = {"type": "audio", "audio": "https://cdn.example.com/sample.mp3"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"from": TEXT_VOICE["from"]}, "name"),
        ({"name": "", "from": TEXT_VOICE["from"]}, "name"),
        ({"name": "x" * 101, "from": TEXT_VOICE["from"]}, "name"),
        ({"name": "a\u0000b", "from": TEXT_VOICE["from"]}, "name"),
        ({"name": "n"}, "from"),
        ({"name": "n", "from": {"type": "text", "prompt": "too short", "model": "eleven_ttv_v3"}}, "from.prompt"),
        ({"name": "n", "from": {"type": "text", "prompt": PROMPT, "model": "gpt"}}, "from.model"),
        ({"name": "n", "from": {"type": "video"}}, "from.type"),
        ({"name": "n", "from": {**audio, "audio": "http://cdn.example.com/sample.mp3"}}, "from.audio"),
        ({"name": "n", "from": {**audio, "audio": "https://10.0.0.7/sample.mp3"}}, "from.audio"),
        ({"name": "n", "from": {**audio, "audio": "data:image/png;base64,AAAAAAAAAAAA"}}, "from.audio"),
        ({"name": "n", "description": "", "from": TEXT_VOICE["from"]}, "description"),
        ({"name": "n", "from": TEXT_VOICE["from"], "extra": 1}, "extra"),
    ]
    for body, field in bad:
        status, err = await server.admin("POST", "/v1/voices", body)
        assert status == 422 and err["error"]["field"] == field, (body, err)
    for body in ({"prompt": "short", "model": "eleven_ttv_v3"}, {"prompt": PROMPT}):
        assert (await server.admin("POST", "/v1/voices/preview", body))[0] == 422
    assert (await server.admin("PATCH", f"/v1/voices/{'0' * 8}-0000-4000-8000-{'0' * 12}", {"desc": 1}))[0] == 422
    assert (await server.admin("GET", "/v1/voices/not-a-uuid"))[0] == 404
    status, err = await server.admin("GET", "/v1/voices?cursor=not-one-of-theirs")
    assert status == 422 and err["error"]["field"] == "cursor", err
    code, page = await upstream.call("GET", "/v1/voices?limit=10")
    assert code == 200 and page["data"] == []  # nothing reached the upstream

    status, from_audio = await server.admin("POST", "/v1/voices", {"name": "Clone", "from": audio})
    assert status == 201 and from_audio["status"] == "PROCESSING", from_audio
    await wait_voice(server, from_audio["id"])


async def test_preview_is_a_wav_the_engine_serves(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    status, preview = await server.admin("POST", "/v1/voices/preview", {"prompt": PROMPT, "model": "eleven_ttv_v3"})
    assert status == 200, preview
    code, direct = await upstream.call("POST", "/v1/voices/preview", {"prompt": PROMPT, "model": "eleven_ttv_v3"})
    assert code == 200
    validate(direct, "/v1/voices/preview", "post")
    rate, seconds = await fetch_wav(preview["url"])
    assert rate == 48_000 and abs(seconds - preview["durationSecs"]) < 0.01 and seconds > 1.0
    async with aiohttp.ClientSession() as http, http.get(preview["url"].replace(".wav", "x.wav")) as resp:
        assert resp.status == 404


def test_a_description_picks_the_espeak_voice() -> None:
    guide = describe(PROMPT, "seed")
    assert guide.language == "en-gb" and guide.variant.startswith("m") and guide.speed == 130 and guide.pitch == 25
    bright = describe("A bright, energetic young American woman who talks fast.", "seed")
    assert bright.language == "en-us" and bright.variant.startswith("f") and bright.speed == 195
    assert bright.pitch == 75
    assert describe("A Scottish grandmother telling stories", "x").language == "en-gb-scotland"
    assert describe("Someone neutral and clear", "a") == describe("Someone neutral and clear", "a")  # stable


async def test_a_session_speaks_in_the_avatars_custom_voice(runway_server: ServerHarness,
                                                            engine: EngineHarness) -> None:
    server = runway_server
    status, voice = await server.admin("POST", "/v1/voices", TEXT_VOICE)
    assert status == 201
    await wait_voice(server, voice["id"])
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(voice={"type": "custom",
                                                                                 "id": voice["id"]}))
    assert status == 201
    await wait_status(server, avatar["id"], "READY")
    status, session = await server.admin("POST", "/v1/sessions", {"avatar": {"type": "custom",
                                                                             "avatarId": avatar["id"]}})
    assert status == 201, session
    rec = await server.wait_for(session["id"], lambda r: r["upstreamId"] is not None)
    record = engine.app[ENGINE_STATE].sessions[rec["upstreamId"]].avatar_record
    assert record is not None and record["espeakVoice"] == describe(PROMPT, voice["id"])
    assert isinstance(record["espeakVoice"], Voice)
    await server.admin("DELETE", f"/v1/sessions/{session['id']}")
