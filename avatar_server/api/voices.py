"""Custom voices (admin): Runway's ``/v1/voices``, validated here, then passed to the upstream.

    POST   /v1/voices            {name, description?, from}  201 the voice (PROCESSING at first)
    GET    /v1/voices?limit&cursor                           200 {data, hasMore, nextCursor}
    GET    /v1/voices/{id}                                   200 the voice
    PATCH  /v1/voices/{id}       {name}                      200 the voice
    DELETE /v1/voices/{id}                                   204
    POST   /v1/voices/preview    {prompt, model}             200 {url, durationSecs}

Fields, limits and shapes are Runway's; a bad body answers 422 naming the field before any
upstream call. An avatar uses a voice with ``voice: {type: "custom", id}`` once it is READY.
Voices are not cached: every read is the upstream's answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import UPSTREAM
from ..errors import NotFound, UpstreamStatusError, ValidationFailed
from ..models.voices import VoiceCreate, VoicePatch, VoicePreviewRequest
from . import bodies
from .auth import require_admin
from .params import path_id

routes = web.RouteTableDef()

_VOICE_KEYS = ("id", "name", "description", "createdAt", "status", "previewUrl", "failureReason")


def _voice(raw: dict[str, Any]) -> dict[str, Any]:
    """The upstream's voice, kept to Runway's keys (nullable ones always present)."""
    out = {k: raw.get(k) for k in _VOICE_KEYS}
    if out["status"] != "READY":
        out["previewUrl"] = None
    if out["status"] != "FAILED":
        out["failureReason"] = None
    return out


async def _call(call: Any, voice_id: str) -> Any:
    """An upstream call on one voice; its 404 is ours (``voice_not_found``)."""
    try:
        return await call
    except NotFound:
        raise NotFound(f"no voice {voice_id}", code="voice_not_found") from None


@routes.post("/v1/voices")
async def create_voice(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, VoiceCreate)
    upstream = request.app[UPSTREAM]
    voice_id = await upstream.create_voice(body.upstream_body())
    return web.json_response(_voice(await upstream.get_voice(voice_id)), status=201)


@routes.get("/v1/voices")
async def list_voices(request: web.Request) -> web.Response:
    require_admin(request)
    limit = bodies.query_int(request, "limit", 50, 1, 100)
    cursor = request.query.get("cursor") or None
    if cursor is not None and len(cursor) > 1000:
        raise ValidationFailed("cursor is not valid", field="cursor")
    try:
        page = await request.app[UPSTREAM].list_voices(limit=limit, cursor=cursor)
    except UpstreamStatusError as exc:
        if cursor is not None and exc.upstream_status == 400:  # the cursor is the upstream's: it refused it
            raise ValidationFailed("cursor is not valid", field="cursor") from None
        raise
    return web.json_response({"data": [_voice(v) for v in page["data"] if isinstance(v, dict)],
                              "hasMore": bool(page.get("hasMore")), "nextCursor": page.get("nextCursor")})


@routes.post("/v1/voices/preview")
async def preview_voice(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, VoicePreviewRequest)
    raw = await request.app[UPSTREAM].preview_voice(body.model_dump())
    return web.json_response({"url": raw.get("url"), "durationSecs": raw.get("durationSecs")})


@routes.get("/v1/voices/{id}")
async def get_voice(request: web.Request) -> web.Response:
    require_admin(request)
    voice_id = path_id(request, "id", "voice")
    return web.json_response(_voice(await _call(request.app[UPSTREAM].get_voice(voice_id), voice_id)))


@routes.patch("/v1/voices/{id}")
async def update_voice(request: web.Request) -> web.Response:
    require_admin(request)
    voice_id = path_id(request, "id", "voice")
    body = await bodies.parse(request, VoicePatch)
    raw = await _call(request.app[UPSTREAM].update_voice(voice_id, body.model_dump()), voice_id)
    return web.json_response(_voice(raw))


@routes.delete("/v1/voices/{id}")
async def delete_voice(request: web.Request) -> web.Response:
    require_admin(request)
    voice_id = path_id(request, "id", "voice")
    if not await request.app[UPSTREAM].delete_voice(voice_id):
        raise NotFound(f"no voice {voice_id}", code="voice_not_found")
    return web.Response(status=204)
