"""Runway's realtime sessions (``Authorization: Bearer <api key>``, ``X-Runway-Version: 2024-11-06``):

    POST   /v1/realtime_sessions               200 {id}
    GET    /v1/realtime_sessions/{id}          200 status-discriminated session
    DELETE /v1/realtime_sessions/{id}          204 (cancel; idempotent on terminal sessions)
    POST   /v1/realtime_sessions/{id}/consume  200 {url, token, roomName}
           auth: Bearer <sessionKey>; X-Runway-Version optional (not in the spec;
           browsers may call it). url = <public base><mount prefix>/v1/rtc/<id>.
    POST   /v1/realtime_sessions/{id}/connect_backend   200 {url, token, roomName, transport}
    GET    /v1/realtime_sessions/{id}/backend  WebSocket of the session's backend (``engine.backend``)

Every route but the backend socket is counted and honours injected faults (ops ``create``,
``get``, ``delete``, ``consume``; ``connect_backend`` is counted only).
"""

from __future__ import annotations

from aiohttp import web

from avatar_server.engine.backend import TRANSPORT as BACKEND_TRANSPORT
from avatar_server.engine.errors import EngineError
from avatar_server.engine.http.auth import authorize, bearer, require_api_key, require_version
from avatar_server.engine.http.bodies import json_body, validate_create_body
from avatar_server.engine.http.context import ENGINE_BACKENDS, ENGINE_STATE, public_base
from avatar_server.engine.http.faults import count, with_faults


def add_session_routes(app: web.Application) -> None:
    app.router.add_post("/v1/realtime_sessions", create_session)
    app.router.add_get("/v1/realtime_sessions/{id}", get_session, allow_head=False)
    app.router.add_delete("/v1/realtime_sessions/{id}", delete_session)
    app.router.add_post("/v1/realtime_sessions/{id}/consume", consume_session)
    app.router.add_post("/v1/realtime_sessions/{id}/connect_backend", connect_backend)
    app.router.add_get("/v1/realtime_sessions/{id}/backend", backend_socket, allow_head=False)


async def create_session(request: web.Request) -> web.StreamResponse:
    count(request, "create")
    require_api_key(request)
    require_version(request)
    state = request.app[ENGINE_STATE]

    async def perform() -> web.StreamResponse:
        body = await json_body(request)
        state.check_open()
        session = await state.create(validate_create_body(body))
        return web.json_response({"id": session.id})

    return await with_faults(request, "create", perform)


async def get_session(request: web.Request) -> web.StreamResponse:
    count(request, "get")
    require_api_key(request)
    require_version(request)
    state = request.app[ENGINE_STATE]
    id = request.match_info["id"]

    async def perform() -> web.StreamResponse:
        return web.json_response(state.to_wire(state.get(id)))

    return await with_faults(request, "get", perform)


async def delete_session(request: web.Request) -> web.StreamResponse:
    count(request, "delete")
    require_api_key(request)
    require_version(request)
    state = request.app[ENGINE_STATE]
    id = request.match_info["id"]

    async def perform() -> web.StreamResponse:
        await state.cancel(id)
        return web.Response(status=204)

    return await with_faults(request, "delete", perform)


async def consume_session(request: web.Request) -> web.StreamResponse:
    count(request, "consume")
    require_version(request, optional=True)
    key = bearer(request)
    if key is None:
        raise EngineError(401, "Missing session key: send Authorization: Bearer <sessionKey>")
    state = request.app[ENGINE_STATE]
    id = request.match_info["id"]

    async def perform() -> web.StreamResponse:
        credentials = state.consume(id, key)
        return web.json_response({"url": rtc_url(request, id), **credentials})

    return await with_faults(request, "consume", perform)


async def connect_backend(request: web.Request) -> web.StreamResponse:
    """Credentials for a backend to answer the session's ``backend_rpc`` tools (engine/backend.py)."""
    count(request, "connect_backend")
    authorize(request)
    id = request.match_info["id"]
    session = request.app[ENGINE_STATE].get(id)
    if session.status.is_terminal:
        raise EngineError(409, f"Session is {session.status.value}")
    if not any(isinstance(t, dict) and t.get("type") == "backend_rpc" for t in session.tools):
        raise EngineError(400, "Session has no backend_rpc tools")
    token = request.app[ENGINE_BACKENDS].connect(id)
    base = rtc_url(request, id, suffix=f"/v1/realtime_sessions/{id}/connect_backend")
    url = base.replace("http", "ws", 1).removesuffix(f"/v1/rtc/{id}") + f"/v1/realtime_sessions/{id}/backend"
    return web.json_response({"url": url, "token": token, "roomName": f"session-{id}",
                              "transport": BACKEND_TRANSPORT})


async def backend_socket(request: web.Request) -> web.StreamResponse:
    id = request.match_info["id"]
    hub = request.app[ENGINE_BACKENDS]
    token = bearer(request)
    if token is None or not hub.token_ok(id, token):
        raise EngineError(401, "Invalid backend token")
    return await hub.serve(id, request)


def rtc_url(request: web.Request, id: str, suffix: str | None = None) -> str:
    """``<public base><mount prefix>/v1/rtc/<id>``; the prefix is what precedes this app's own path."""
    suffix = suffix or f"/v1/realtime_sessions/{id}/consume"
    path = request.path
    prefix = path[: -len(suffix)] if path.endswith(suffix) else ""
    return f"{public_base(request)}{prefix}/v1/rtc/{id}"
