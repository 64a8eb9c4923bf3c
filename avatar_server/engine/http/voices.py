"""Runway's ``/v1/voices`` on the engine (the voices themselves: ``engine.voices``).

    POST   /v1/voices            {name, description?, from: {type: "text", prompt, model}
                                                       | {type: "audio", audio}}     200 {id}
    GET    /v1/voices?limit&cursor                    200 {data, hasMore, nextCursor}  newest first
    GET    /v1/voices/{id}                            200 voice (status-discriminated)
    PATCH  /v1/voices/{id}       {name}               200 voice
    DELETE /v1/voices/{id}                            204
    POST   /v1/voices/preview    {prompt, model}      200 {url, durationSecs}
    GET    /v1/voices/previews/{token}.wav            200 audio/wav (no auth: the token is the capability)

Same auth, version header and error shape as the realtime-session routes; every route but the
preview WAV honours injected faults (ops ``voice_create`` … ``voice_preview``).
"""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from avatar_server.engine.errors import EngineError
from avatar_server.engine.http.bodies import json_body
from avatar_server.engine.http.context import base_url
from avatar_server.engine.http.faults import guarded
from avatar_server.engine.validation import Issues
from avatar_server.engine.voices import (
    LIMIT_DEFAULT,
    MAX_VOICES,
    EngineVoice,
    EngineVoices,
    describe,
    validate_create,
    validate_preview,
)
from avatar_server.runway import UUID4


def add_voice_routes(app: web.Application, voices: EngineVoices) -> None:
    route = guarded

    def find(request: web.Request) -> EngineVoice:
        voice_id = request.match_info["id"]
        voice = voices.voices.get(voice_id.lower()) if UUID4.match(voice_id) else None
        if voice is None:
            raise EngineError(404, "Voice not found")
        return voice

    async def create(request: web.Request) -> web.StreamResponse:
        name, description, source = validate_create(await json_body(request))
        if len(voices.voices) >= MAX_VOICES:
            raise EngineError(400, f"At most {MAX_VOICES} voices")
        voice_id = str(uuid.uuid4())
        now = time.time()
        espeak = describe(source.get("prompt") if source["type"] == "text" else None, voice_id)
        delay = max(0.0, voices.config.avatar_processing_delay.sample(voices.rng))
        voice = EngineVoice(voice_id, name, description, now, now + delay, espeak)
        voices.voices[voice_id] = voice
        voices.prepare(voice)
        return web.json_response({"id": voice_id})

    async def list_voices(request: web.Request) -> web.StreamResponse:
        issues = Issues()
        limit = LIMIT_DEFAULT
        if "limit" in request.query:
            try:
                limit = int(request.query["limit"])
            except ValueError:
                issues.add("invalid_type", ["limit"], "Expected integer")
            else:
                if not 1 <= limit <= 100:
                    issues.add("too_big" if limit > 100 else "too_small", ["limit"], "Number must be 1-100")
        ordered = sorted(voices.voices.values(), key=lambda v: (v.created_at, v.id), reverse=True)
        cursor = request.query.get("cursor")
        if cursor is not None:
            ids = [v.id for v in ordered]
            if cursor not in ids:
                issues.add("custom", ["cursor"], "Invalid cursor")
            else:
                ordered = ordered[ids.index(cursor) + 1:]
        if issues.items:
            raise EngineError(400, f"Invalid query: {issues.items[0]['path'][0]}: {issues.items[0]['message']}",
                              issues.items)
        page = ordered[:limit]
        more = len(ordered) > limit
        base = base_url(request)
        return web.json_response({"data": [voices.wire(v, base) for v in page], "hasMore": more,
                                  "nextCursor": page[-1].id if more and page else None})

    async def get(request: web.Request) -> web.StreamResponse:
        return web.json_response(voices.wire(find(request), base_url(request)))

    async def patch(request: web.Request) -> web.StreamResponse:
        voice = find(request)
        body = await json_body(request)
        issues = Issues()
        if issues.obj(body, []):
            for key in body:
                if key != "name":
                    issues.add("unrecognized_keys", [], f"Unrecognized key(s) in object: '{key}'")
            if "name" in body:
                issues.string(body["name"], ["name"], 1, 100)
        issues.raise_if_any()
        if "name" in body:
            voice.name = body["name"]
        return web.json_response(voices.wire(voice, base_url(request)))

    async def delete(request: web.Request) -> web.StreamResponse:
        voice = find(request)
        del voices.voices[voice.id]
        return web.Response(status=204)

    async def preview(request: web.Request) -> web.StreamResponse:
        prompt = validate_preview(await json_body(request))
        token, seconds = await voices.render(describe(prompt, prompt))
        return web.json_response({"url": f"{base_url(request)}/v1/voices/previews/{token}.wav",
                                  "durationSecs": seconds})

    async def preview_wav(request: web.Request) -> web.StreamResponse:
        found = voices.previews.get(request.match_info["token"])
        if found is None or found.expires < time.time():
            raise EngineError(404, "Preview not found (previews are kept for an hour)")
        return web.Response(body=found.wav, content_type="audio/wav",
                            headers={"Cache-Control": "private, max-age=3600",
                                     "Access-Control-Allow-Origin": "*"})

    app.router.add_post("/v1/voices/preview", route("voice_preview", preview))
    app.router.add_get("/v1/voices/previews/{token}.wav", preview_wav, allow_head=False)
    app.router.add_post("/v1/voices", route("voice_create", create))
    app.router.add_get("/v1/voices", route("voice_list", list_voices), allow_head=False)
    app.router.add_get("/v1/voices/{id}", route("voice_get", get), allow_head=False)
    app.router.add_patch("/v1/voices/{id}", route("voice_update", patch))
    app.router.add_delete("/v1/voices/{id}", route("voice_delete", delete))
