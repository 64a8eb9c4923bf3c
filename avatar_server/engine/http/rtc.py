"""``POST /v1/rtc/{id}``: the browser's SDP offer in, the engine's complete answer out.

    POST /v1/rtc/{id}
    Authorization: Bearer <rtc token issued with the session's credentials>
    {"sdp": "v=0...", "type": "offer"}
    → 200 {"sdp": "v=0...", "type": "answer"}

Non-trickle: the browser sends its offer once ICE gathering is complete and
the answer carries all of the engine's candidates. Errors use Runway's shape
``{"error": "<message>"}``: 400 bad body/offer, 401 missing or wrong token,
404 unknown session, 409 a second offer or a session that may not connect.
Cross-origin callers (the widget on a customer's site) are allowed: the
bearer token is the credential, no cookies are involved.

The route is generic: the engine wires it to its own session store through
``get_session``, ``token_ok``, ``session_media`` and the two callbacks.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from avatar_server import jsonlimits
from avatar_server.bearer import MalformedCredential, parse_bearer
from avatar_server.engine.errors import EngineError
from avatar_server.engine.http.errors import error_response

if TYPE_CHECKING:  # the route only holds the key; engine.media (aiortc) is the caller's import
    from avatar_server.engine.media.manager import MediaManager

log = logging.getLogger(__name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


@dataclass(frozen=True)
class SessionMedia:
    avatar: dict[str, Any]
    personality: str | None
    start_script: str | None
    max_duration: float | None = None
    tools: list[dict[str, Any]] | None = None


def rtc_token_ok(session: object, token: str) -> bool:
    """Constant-time comparison with ``session.rtc_token`` (False when it has none)."""
    expected = getattr(session, "rtc_token", None)
    if not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), token.encode())


def session_media_of(session: object) -> SessionMedia:
    """Read ``avatar`` (merged with ``avatar_record`` when present), ``personality``, ``start_script``.

    ``max_duration`` is left to the session's owner (the engine's own timers).
    """
    avatar = dict(getattr(session, "avatar", None) or {})
    record = getattr(session, "avatar_record", None)
    if isinstance(record, dict):
        avatar.update(record)
    return SessionMedia(
        avatar=avatar,
        personality=getattr(session, "personality", None),
        start_script=getattr(session, "start_script", None),
        tools=getattr(session, "tools", None),
    )


SessionGetter = Callable[[str], "object | None | Awaitable[object | None]"]


def add_rtc_routes(
    app: web.Application,
    *,
    manager_key: web.AppKey[MediaManager],
    get_session: SessionGetter,
    token_ok: Callable[[object, str], bool] = rtc_token_ok,
    on_connected: Callable[[str], None],
    on_closed: Callable[[str, str], None],
    session_media: Callable[[object], SessionMedia] = session_media_of,
    path: str = "/v1/rtc/{id}",
    on_turn: Callable[[str, str, str], None] | None = None,
    call_backend: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
    on_tool: Callable[[str, dict[str, Any], dict[str, Any]], None] | None = None,
) -> None:
    """Register the offer/answer endpoint (and its CORS preflight) on ``app``.

    ``get_session(id)`` (sync or async) returns the session or None; it may
    raise an ``EngineError`` (or any exception with ``status`` and
    ``message``) to refuse, e.g. 409 for a session that is not consumed.
    ``on_connected(id)`` fires when media flows, ``on_closed(id, reason)`` once
    when the peer ends (reasons: ``peer.CloseReason`` values); ``on_turn(id, role, text)`` for each
    turn of the conversation (``user``: the visitor's message as understood; ``assistant``: the answer).
    ``call_backend(id, tool, args)`` answers a ``backend_rpc`` tool call (``{"result"}`` or ``{"error"}``);
    ``on_tool(id, call, result)`` hears every tool call of the conversation.
    """

    async def _session(session_id: str) -> object | None:
        session = get_session(session_id)
        return await session if inspect.isawaitable(session) else session

    async def offer(request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        try:
            token = parse_bearer(request.headers.get("Authorization", ""))
        except MalformedCredential:
            return _error(401, "Invalid token")
        if token is None:
            return _error(401, "Missing bearer token")
        try:
            session = await _session(session_id)
            if session is None:
                return _error(404, "Session not found")
            if not token_ok(session, token):
                return _error(401, "Invalid token")
            try:
                body = await request.json(loads=jsonlimits.loads)
            except (ValueError, UnicodeDecodeError):  # not JSON, or past jsonlimits' limits
                return _error(400, "The body must be JSON {sdp, type}")
            media = session_media(session)
            answer = await request.app[manager_key].answer(
                session_id,
                body,
                avatar=media.avatar,
                personality=media.personality,
                start_script=media.start_script,
                max_duration=media.max_duration,
                on_connected=lambda: on_connected(session_id),
                on_closed=lambda reason: on_closed(session_id, reason),
                on_turn=(lambda role, text: on_turn(session_id, role, text)) if on_turn is not None else None,
                tools=media.tools,
                call_backend=(lambda tool, args: call_backend(session_id, tool, args))
                if call_backend is not None else None,
                on_tool=(lambda call, result: on_tool(session_id, call, result)) if on_tool is not None else None,
            )
            # The session may have ended (cancelled, capped) while the peer was being built, before
            # its owner could see a peer to close: look again, and close the peer if so.
            try:
                still_live = await _session(session_id) is not None
            except Exception:
                still_live = False
            if not still_live:
                await request.app[manager_key].close_session(session_id)
                return _error(409, "The session ended while its media connection was set up")
        except Exception as exc:
            status, message = _error_of(exc)
            if status is None:
                raise
            return _error(status, message)
        return web.json_response(answer, headers=CORS_HEADERS)

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS_HEADERS)

    app.router.add_post(path, offer)
    app.router.add_route("OPTIONS", path, preflight)


def _error_of(exc: Exception) -> tuple[int | None, str]:
    if isinstance(exc, EngineError):
        return exc.status, exc.message
    status, message = getattr(exc, "status", None), getattr(exc, "message", None)
    if isinstance(status, int) and isinstance(message, str):
        return status, message
    return None, ""


def _error(status: int, message: str) -> web.Response:
    return error_response(EngineError(status, message), headers=CORS_HEADERS)
