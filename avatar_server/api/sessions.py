"""Session routes: thin handlers — validate, call the service, serialise."""

from __future__ import annotations

import asyncio
import contextlib
import math

from aiohttp import web

from ..appkeys import ADMISSION, SESSIONS, SETTINGS
from ..errors import ValidationFailed
from ..models.session_views import SessionConnected, SessionCreated, SessionView
from ..models.sessions import EndReason, SessionConnect, SessionCreate, iso
from ..runway import iso_ms
from ..sessions.service import SessionService
from . import admission, bodies, transport
from .auth import require_admin, session_principal
from .params import path_id

routes = web.RouteTableDef()


def signal_url(request: web.Request, session_id: str) -> str:
    """The one public base URL (``AVATAR_SERVER_PUBLIC_URL``, else derived from the listen address),
    the same the engine's media URL and the demo use: never a mix of ``localhost`` and ``127.0.0.1``."""
    base = request.app[SETTINGS].base_url()
    scheme = "wss" if base.startswith("https") else "ws"
    return f"{scheme}{base[base.index(':'):]}/v1/sessions/{session_id}/signal"


@routes.post("/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    who = await admission.authenticate_starter(request)
    req = await bodies.parse(request, SessionCreate)
    rec, client_token = await request.app[ADMISSION].start(who, req)
    body = SessionCreated(
        id=rec.id,
        status=rec.status,
        clientToken=client_token,
        signalUrl=signal_url(request, rec.id),
        maxDuration=rec.maxDuration,
        createdAt=iso_ms(rec.createdAt),
    )
    return web.json_response(body.model_dump(mode="json"), status=201)


@routes.post("/v1/sessions/connect")
async def connect_session(request: web.Request) -> web.Response:
    who = await admission.authenticate_starter(request)
    accepted = transport.accepted_transports(request)
    transport.check_before_start(request, accepted)  # 409 transport_unsupported: nothing started
    req = (await bodies.parse(request, SessionConnect)).to_create()
    rec, client_token = await request.app[ADMISSION].start(who, req, avatar_field="avatarId")
    svc: SessionService = request.app[SESSIONS]
    try:
        await svc.wait_ready(rec.id, svc.config.provision_timeout + 5)
        rec, creds = await svc.deliver(rec.id)
    except asyncio.CancelledError:
        # the caller went away: nobody will ever get these credentials
        with contextlib.suppress(Exception):
            await asyncio.shield(svc.end(rec.id, EndReason.ABANDONED, "the connect request was abandoned"))
        raise
    if creds.transport not in accepted:
        # an upstream that answered another transport than expected: the caller could not use
        # these credentials, so nobody gets them
        with contextlib.suppress(Exception):
            await asyncio.shield(svc.end(rec.id, EndReason.ERROR, "the caller cannot use this transport"))
        raise transport.unsupported(creds.transport, accepted)
    # iceServers only for webrtc: absent otherwise (not null), hence exclude_unset below
    ice = {"iceServers": list(request.app[SETTINGS].ice_servers)} if creds.transport == "webrtc" else {}
    body = SessionConnected(
        sessionId=rec.id,
        serverUrl=creds.serverUrl,
        token=creds.token,
        roomName=creds.roomName,
        transport=creds.transport,
        clientToken=client_token,
        signalUrl=signal_url(request, rec.id),
        endsAt=iso(rec.endsAt),
        **ice,
    )
    return web.json_response(body.model_dump(mode="json", exclude_unset=True))


@routes.get("/v1/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    sid = path_id(request, "id", "session")
    await session_principal(request, sid)
    svc = request.app[SESSIONS]
    view = await svc.view(await svc.get(sid))
    return web.json_response(view.model_dump(mode="json"))


@routes.delete("/v1/sessions/{id}")
async def delete_session(request: web.Request) -> web.Response:
    sid = path_id(request, "id", "session")
    who = await session_principal(request, sid)
    reason = EndReason.ADMIN if who.kind == "admin" else EndReason.CLIENT
    rec = await request.app[SESSIONS].end(sid, reason)
    return web.json_response(SessionView.from_record(rec).model_dump(mode="json"))


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    require_admin(request)
    status = request.query.get("status", "active")
    if status not in ("active", "ended"):
        raise ValidationFailed("status must be 'active' or 'ended'", field="status")
    limit = bodies.query_int(request, "limit", 50, 1, 100)
    cursor_raw = request.query.get("cursor")
    cursor: float | None = None
    if cursor_raw:
        try:
            cursor = float(cursor_raw)
        except ValueError:
            cursor = math.nan
        if not math.isfinite(cursor):
            raise ValidationFailed("cursor is not valid", field="cursor")
    page = await request.app[SESSIONS].page(active=status == "active", limit=limit, cursor=cursor)
    return web.json_response(page.model_dump(mode="json"))
