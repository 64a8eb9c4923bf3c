"""HTTP face of the local engine: Runway's realtime-session API plus a control API.

Mounted by the server at ``/engine`` (``app.add_subapp("/engine", create_engine_app(...))``)
or served alone by ``avatar-server engine --port N``.

Runway-compatible routes (``Authorization: Bearer <api key>`` and ``X-Runway-Version: 2024-11-06``):

    POST   /v1/realtime_sessions               200 {id}
    GET    /v1/realtime_sessions/{id}          200 status-discriminated session
    DELETE /v1/realtime_sessions/{id}          204 (cancel; idempotent on terminal sessions)
    POST   /v1/realtime_sessions/{id}/consume  200 {url, token, roomName}
           auth: Bearer <sessionKey>; X-Runway-Version optional (not in the spec;
           browsers may call it). url = <public base><mount prefix>/v1/rtc/<id>.

Conversations (``/v1/avatar_conversations``, one per realtime session) and ``/v1/avatar_usage``: see
``engine.conversations_api``. Custom voices (``/v1/voices``, mapped to espeak-ng voices, WAV previews):
``engine.voices_api``.

Avatars and documents (``/v1/avatars``, ``/v1/documents``, Runway's shapes) when the engine is given
a ``catalog_store``: see ``engine.catalog`` and ``engine.catalog_api``.

Errors are Runway's shape ``{"error": "<message>"}`` (400 may add ``issues``).

Control routes (api key only), for tests, demos and benchmarks:

    POST   /_control/faults      {"rules": [...]} append fault rules (see engine.faults)
    GET    /_control/faults      pending rules
    DELETE /_control/faults      clear rules (204)
    POST   /_control/fail-next   {"count", "failureCode", "failure"}: next sessions FAIL instead of READY
    GET    /_control/config      current settings
    PATCH  /_control/config      {"provisioningDelay", "avatarProcessingDelay", "concurrencyLimit", "readyTtl",
                                  "connectGrace", "maxDurationLimit"} (all optional; validated before any applies)
    GET    /_control/sessions    [{id, status, queued, consumed, createdAt, endedAt, readyAt(epoch|null)}]
    GET    /_control/stats       {requests: {op: n}, faultsInjected: {op: n}, pendingRules, sessions, active, queued,
                                  alive, peakAlive (most not terminal at once), peakPerSecond (most requests in a second)}
    DELETE /_control/stats       reset the counters (204)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from avatar_server import jsonlimits
from avatar_server.bearer import MalformedCredential, parse_bearer
from avatar_server.engine.backend import TRANSPORT as BACKEND_TRANSPORT
from avatar_server.engine.backend import BackendHub
from avatar_server.engine.catalog import CatalogKnowledge, EngineCatalog
from avatar_server.engine.catalog_api import add_catalog_routes
from avatar_server.engine.config import Delay, EngineConfig
from avatar_server.engine.conversations_api import TRANSCRIPT_MAX, add_conversation_routes
from avatar_server.engine.faults import FaultInjector, FaultRule, FaultRuleError
from avatar_server.engine.media.conversation import KnowledgeSource
from avatar_server.engine.media.manager import MediaManager
from avatar_server.engine.media.routes import add_rtc_routes
from avatar_server.engine.media.speech import SpeechSynth
from avatar_server.engine.state import (
    AvatarLookup,
    EngineError,
    EngineSession,
    EngineState,
    EngineStatus,
    iso,
)
from avatar_server.engine.voices_api import EngineVoices, add_voice_routes
from avatar_server.store.engine_catalog import EngineCatalogStore

log = logging.getLogger(__name__)

RUNWAY_VERSION = "2024-11-06"
MAX_BODY = 6 * 1024 * 1024  # an avatar with a 5 MB data-URI image and the rest of its fields


@dataclass(frozen=True)
class _EngineContext:
    api_keys: Callable[[], Iterable[str]]
    public_url: str | None


ENGINE_STATE = web.AppKey("engine_state", EngineState)
ENGINE_MEDIA = web.AppKey("engine_media", MediaManager)
ENGINE_BACKENDS = web.AppKey("engine_backends", BackendHub)
ENGINE_FAULTS = web.AppKey("engine_faults", FaultInjector)
ENGINE_VOICES = web.AppKey("engine_voices", EngineVoices)
_CONTEXT = web.AppKey("engine_context", _EngineContext)


def create_engine_app(
    config: EngineConfig,
    *,
    api_keys: Callable[[], Iterable[str]],
    public_url: str | None = None,
    avatar_lookup: AvatarLookup | None = None,
    knowledge: KnowledgeSource | None = None,
    catalog_store: Callable[[], EngineCatalogStore] | None = None,
) -> web.Application:
    """``catalog_store``: where avatars and documents live (Redis; called on first use, so it may
    read a client the hosting application opens at startup). Without it the engine has no
    ``/v1/avatars`` or ``/v1/documents`` and refuses custom avatars."""
    app = web.Application(middlewares=[_runway_errors], client_max_size=MAX_BODY)
    catalog = EngineCatalog(catalog_store, config) if catalog_store is not None else None
    if catalog is not None:
        avatar_lookup = avatar_lookup or catalog.session_avatar
        knowledge = knowledge or CatalogKnowledge(catalog)
    speech = SpeechSynth()
    voices = EngineVoices(config, speech, rng=random.Random(config.seed))
    app[ENGINE_VOICES] = voices
    state = EngineState(config, avatar_lookup=_with_voice(avatar_lookup, voices) if avatar_lookup else None)
    app[ENGINE_STATE] = state
    media = MediaManager(ice_servers=config.ice_servers, knowledge=knowledge, speech=speech,
                         connect_timeout=lambda: state.config.connect_grace)  # PATCH /_control/config may change it
    app[ENGINE_MEDIA] = media
    backends = BackendHub()
    app[ENGINE_BACKENDS] = backends
    _wire_media(app, state, media, backends)
    app[ENGINE_FAULTS] = FaultInjector()
    app[_CONTEXT] = _EngineContext(
        api_keys=api_keys, public_url=public_url.rstrip("/") if public_url else None
    )

    async def close_state(_: web.Application) -> None:
        await backends.close()
        await media.close()
        await state.close()

    app.on_cleanup.append(close_state)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_post("/v1/realtime_sessions", create_session)
    app.router.add_get("/v1/realtime_sessions/{id}", get_session, allow_head=False)
    app.router.add_delete("/v1/realtime_sessions/{id}", delete_session)
    app.router.add_post("/v1/realtime_sessions/{id}/consume", consume_session)
    app.router.add_post("/v1/realtime_sessions/{id}/connect_backend", connect_backend)
    app.router.add_get("/v1/realtime_sessions/{id}/backend", backend_socket, allow_head=False)
    add_conversation_routes(app, state, authorize=_authorize, with_faults=_with_faults,
                            count=lambda request, op: request.app[ENGINE_FAULTS].count(op))
    add_voice_routes(app, voices, authorize=_authorize, read_json=_json_body, with_faults=_with_faults,
                     count=lambda request, op: request.app[ENGINE_FAULTS].count(op), base_url=_base_url)
    if catalog is not None:
        add_catalog_routes(app, catalog, authorize=_authorize, read_json=_json_body, with_faults=_with_faults,
                           count=lambda request, op: request.app[ENGINE_FAULTS].count(op))
    app.router.add_post("/_control/faults", add_faults)
    app.router.add_get("/_control/faults", list_faults, allow_head=False)
    app.router.add_delete("/_control/faults", clear_faults)
    app.router.add_post("/_control/fail-next", fail_next)
    app.router.add_get("/_control/config", get_config, allow_head=False)
    app.router.add_patch("/_control/config", patch_config)
    app.router.add_get("/_control/sessions", list_sessions, allow_head=False)
    app.router.add_get("/_control/stats", get_stats, allow_head=False)
    app.router.add_delete("/_control/stats", reset_stats)
    return app


def _with_voice(lookup: AvatarLookup, voices: EngineVoices) -> AvatarLookup:
    """The avatar lookup, adding the espeak-ng voice its custom voice maps to (``espeakVoice``)."""

    async def find(avatar_id: str) -> dict[str, Any] | None:
        avatar = await lookup(avatar_id)
        voice = avatar.get("voice") if avatar else None
        if avatar is not None and isinstance(voice, dict) and voice.get("type") == "custom":
            espeak = voices.espeak_voice(str(voice.get("id", "")))
            if espeak is not None:
                avatar = {**avatar, "espeakVoice": espeak}
        return avatar

    return find


def _base_url(request: web.Request) -> str:
    """``<public base><mount prefix>``: where this engine's routes are reached from outside."""
    path = request.path
    prefix = path[: path.index("/v1/")] if "/v1/" in path else ""
    return (request.app[_CONTEXT].public_url or f"{request.scheme}://{request.host}") + prefix


def _wire_media(app: web.Application, state: EngineState, media: MediaManager, backends: BackendHub) -> None:
    """The media peer follows the session: it may connect once the session is consumed and until
    it ends; its connection makes the session RUNNING, its close completes it (or fails it, if it
    never connected), and a session that ends any other way closes its peer."""
    closing: set[asyncio.Task[bool]] = set()

    def get_session(session_id: str) -> EngineSession | None:
        session = state.sessions.get(session_id)
        if session is not None and not session.media_allowed:
            state_name = session.status.value if session.consumed else "not consumed"
            raise EngineError(409, f"Session is {state_name}")
        return session

    def on_terminal(session: EngineSession, old: EngineStatus | None, new: EngineStatus) -> None:
        if new in (EngineStatus.COMPLETED, EngineStatus.CANCELLED, EngineStatus.FAILED) and media.peer(session.id):
            task = asyncio.ensure_future(media.close_session(session.id))
            closing.add(task)
            task.add_done_callback(closing.discard)
        if new in (EngineStatus.COMPLETED, EngineStatus.CANCELLED, EngineStatus.FAILED):
            ended = asyncio.ensure_future(backends.end(session.id))  # its backend channel goes too
            closing.add(ended)  # type: ignore[arg-type]
            ended.add_done_callback(closing.discard)  # type: ignore[arg-type]

    def on_tool(session_id: str, call: dict[str, Any], result: dict[str, Any]) -> None:
        session = state.sessions.get(session_id)
        if session is not None and len(session.transcript) < TRANSCRIPT_MAX:
            # Runway's transcript: an assistant entry with no content carries the call and its result
            session.transcript.append({"role": "assistant", "content": None, "timestamp": iso(time.time()),
                                       "toolCalls": [call], "toolResults": [result]})

    def on_turn(session_id: str, role: str, text: str) -> None:
        session = state.sessions.get(session_id)
        if session is not None and len(session.transcript) < TRANSCRIPT_MAX:
            session.transcript.append({"role": role, "content": text, "timestamp": iso(time.time())})

    state.add_listener(on_terminal)
    add_rtc_routes(
        app,
        manager_key=ENGINE_MEDIA,
        get_session=get_session,
        on_connected=state.mark_connected,
        on_closed=lambda session_id, reason: state.mark_completed(session_id),
        on_turn=on_turn,
        call_backend=backends.call,
        on_tool=on_tool,
    )


# -- errors, auth, faults ----------------------------------------------------------------------


def _error_response(exc: EngineError) -> web.Response:
    body: dict[str, Any] = {"error": exc.message}
    if exc.issues:
        body["issues"] = exc.issues
    headers = {"Retry-After": _seconds(exc.retry_after)} if exc.retry_after is not None else None
    return web.json_response(body, status=exc.status, headers=headers)


@web.middleware
async def _runway_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except EngineError as exc:
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status, headers=_allow_header(exc))
    except Exception:
        log.exception("engine: unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "Internal server error"}, status=500)


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bearer(request: web.Request) -> str | None:
    try:
        return parse_bearer(request.headers.get("Authorization", ""))
    except MalformedCredential:
        raise EngineError(401, "Invalid API key") from None


def _require_api_key(request: web.Request) -> None:
    token = _bearer(request)
    if token is None:
        raise EngineError(401, "Missing API key: send Authorization: Bearer <key>")
    keys = request.app[_CONTEXT].api_keys()
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys if key):
        raise EngineError(401, "Invalid API key")


def _authorize(request: web.Request) -> None:
    _require_api_key(request)
    _require_version(request)


def _require_version(request: web.Request, *, optional: bool = False) -> None:
    version = request.headers.get("X-Runway-Version")
    if version is None:
        if optional:
            return
        raise EngineError(400, f"Missing X-Runway-Version header (expected {RUNWAY_VERSION})")
    if version != RUNWAY_VERSION:
        raise EngineError(400, f"Unsupported X-Runway-Version {version!r} (expected {RUNWAY_VERSION})")


async def _with_faults(
    request: web.Request, op: str, perform: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Run ``perform`` under the next injected fault rule for ``op``, if one applies."""
    rule = request.app[ENGINE_FAULTS].take(op)
    if rule is None:
        return await perform()
    if rule.when == "before":
        if rule.delay_seconds:
            await asyncio.sleep(rule.delay_seconds)
        if rule.status is not None:
            return _fault_response(rule)
        return await perform()
    try:
        response = await perform()
    except EngineError as exc:
        response = _error_response(exc)
    if rule.delay_seconds:
        await asyncio.sleep(rule.delay_seconds)
    return _fault_response(rule) if rule.status is not None else response


def _fault_response(rule: FaultRule) -> web.Response:
    assert rule.status is not None
    messages = {
        429: "Too many requests",
        503: "Service unavailable",
        502: "Bad gateway",
        504: "Gateway timeout",
    }
    message = rule.message or messages.get(rule.status, "Request failed") + " (injected fault)"
    headers = {"Retry-After": _seconds(rule.retry_after)} if rule.retry_after is not None else None
    return web.json_response({"error": message}, status=rule.status, headers=headers)


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json(loads=jsonlimits.loads)
    except jsonlimits.JsonLimitError as exc:  # too deep, a number too large, NaN/Infinity
        raise EngineError(400, f"Invalid request body: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EngineError(400, "Invalid request body: malformed JSON") from None


# -- Runway routes -----------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.StreamResponse:
    request.app[ENGINE_FAULTS].count("create")
    _require_api_key(request)
    _require_version(request)
    state = request.app[ENGINE_STATE]

    async def perform() -> web.StreamResponse:
        session = await state.create(await _json_body(request))
        return web.json_response({"id": session.id})

    return await _with_faults(request, "create", perform)


async def get_session(request: web.Request) -> web.StreamResponse:
    request.app[ENGINE_FAULTS].count("get")
    _require_api_key(request)
    _require_version(request)
    state = request.app[ENGINE_STATE]
    id = request.match_info["id"]

    async def perform() -> web.StreamResponse:
        return web.json_response(state.to_wire(state.get(id)))

    return await _with_faults(request, "get", perform)


async def delete_session(request: web.Request) -> web.StreamResponse:
    request.app[ENGINE_FAULTS].count("delete")
    _require_api_key(request)
    _require_version(request)
    state = request.app[ENGINE_STATE]
    id = request.match_info["id"]

    async def perform() -> web.StreamResponse:
        await state.cancel(id)
        return web.Response(status=204)

    return await _with_faults(request, "delete", perform)


async def consume_session(request: web.Request) -> web.StreamResponse:
    request.app[ENGINE_FAULTS].count("consume")
    _require_version(request, optional=True)
    key = _bearer(request)
    if key is None:
        raise EngineError(401, "Missing session key: send Authorization: Bearer <sessionKey>")
    state = request.app[ENGINE_STATE]
    id = request.match_info["id"]

    async def perform() -> web.StreamResponse:
        credentials = state.consume(id, key)
        return web.json_response({"url": _rtc_url(request, id), **credentials})

    return await _with_faults(request, "consume", perform)


async def connect_backend(request: web.Request) -> web.StreamResponse:
    """Credentials for a backend to answer the session's ``backend_rpc`` tools (engine/backend.py)."""
    request.app[ENGINE_FAULTS].count("connect_backend")
    _authorize(request)
    id = request.match_info["id"]
    session = request.app[ENGINE_STATE].get(id)
    if session.status.terminal:
        raise EngineError(409, f"Session is {session.status.value}")
    if not any(isinstance(t, dict) and t.get("type") == "backend_rpc" for t in session.tools):
        raise EngineError(400, "Session has no backend_rpc tools")
    token = request.app[ENGINE_BACKENDS].connect(id)
    base = _rtc_url(request, id, suffix=f"/v1/realtime_sessions/{id}/connect_backend")
    url = base.replace("http", "ws", 1).removesuffix(f"/v1/rtc/{id}") + f"/v1/realtime_sessions/{id}/backend"
    return web.json_response({"url": url, "token": token, "roomName": f"session-{id}",
                              "transport": BACKEND_TRANSPORT})


async def backend_socket(request: web.Request) -> web.StreamResponse:
    id = request.match_info["id"]
    hub = request.app[ENGINE_BACKENDS]
    token = _bearer(request)
    if token is None or not hub.token_ok(id, token):
        raise EngineError(401, "Invalid backend token")
    return await hub.serve(id, request)


def _rtc_url(request: web.Request, id: str, suffix: str | None = None) -> str:
    """``<public base><mount prefix>/v1/rtc/<id>``; the prefix is what precedes this app's own path."""
    suffix = suffix or f"/v1/realtime_sessions/{id}/consume"
    path = request.path
    prefix = path[: -len(suffix)] if path.endswith(suffix) else ""
    base = request.app[_CONTEXT].public_url or f"{request.scheme}://{request.host}"
    return f"{base}{prefix}/v1/rtc/{id}"


# -- control routes ----------------------------------------------------------------------------


async def add_faults(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    body = await _json_body(request)
    raw_rules = body.get("rules") if isinstance(body, dict) else None
    if not isinstance(raw_rules, list):
        raise EngineError(400, 'Expected {"rules": [...]}')
    try:
        rules = [FaultRule.from_json(raw) for raw in raw_rules]
    except FaultRuleError as exc:
        raise EngineError(400, f"Invalid fault rule: {exc}") from None
    faults = request.app[ENGINE_FAULTS]
    faults.add(rules)
    return web.json_response({"rules": [r.to_json() for r in faults.rules]})


async def list_faults(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    return web.json_response({"rules": [r.to_json() for r in request.app[ENGINE_FAULTS].rules]})


async def clear_faults(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    request.app[ENGINE_FAULTS].clear()
    return web.Response(status=204)


async def fail_next(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise EngineError(400, "Expected a JSON object")
    count = body.get("count", 1)
    code = body.get("failureCode", "provisioning_failed")
    failure = body.get("failure", "The avatar could not be provisioned")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise EngineError(400, "count must be an integer >= 1")
    if not isinstance(code, str) or not code or not isinstance(failure, str) or not failure:
        raise EngineError(400, "failureCode and failure must be non-empty strings")
    request.app[ENGINE_STATE].fail_next(count, code, failure)
    return web.json_response({"count": count, "failureCode": code, "failure": failure})


async def get_config(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    return web.json_response(request.app[ENGINE_STATE].config.to_json())


async def patch_config(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise EngineError(400, "Expected a JSON object")
    state = request.app[ENGINE_STATE]
    changes: dict[str, Any] = {}
    for key, attr in (("provisioningDelay", "provisioning_delay"),
                      ("avatarProcessingDelay", "avatar_processing_delay")):
        if key in body:
            raw = body[key]
            if _is_number(raw):
                raw = str(raw)
            if not isinstance(raw, str):
                raise EngineError(400, f"{key} must be a delay text like 'uniform:1,2'")
            try:
                changes[attr] = Delay.parse(raw)
            except ValueError as exc:
                raise EngineError(400, f"{key}: {exc}") from None
    if "concurrencyLimit" in body:
        limit = body["concurrencyLimit"]
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise EngineError(400, "concurrencyLimit must be an integer >= 1 or null")
        changes["concurrency_limit"] = limit
    for key, attr in (("readyTtl", "ready_ttl"), ("connectGrace", "connect_grace")):
        if key in body:
            value = body[key]
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise EngineError(400, f"{key} must be a number of seconds > 0")
            changes[attr] = float(value)
    if "honourMaxDuration" in body:
        if not isinstance(body["honourMaxDuration"], bool):
            raise EngineError(400, "honourMaxDuration must be true or false")
        changes["honour_max_duration"] = body["honourMaxDuration"]
    if "maxDurationLimit" in body:
        value = body["maxDurationLimit"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EngineError(400, "maxDurationLimit must be an integer >= 1")
        changes["max_duration_limit"] = value
    for attr, value in changes.items():
        setattr(state.config, attr, value)
    state.config_changed()
    return web.json_response(state.config.to_json())


async def list_sessions(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    return web.json_response(
        [
            {
                "id": s.id,
                "status": s.status.value,
                "queued": s.queued,
                "consumed": s.consumed,
                "createdAt": iso(s.created_at),
                "endedAt": iso(s.ended_at) if s.ended_at is not None else None,
                "readyAt": s.ready_at,
            }
            for s in request.app[ENGINE_STATE].sessions.values()
        ]
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness, no key needed: 200 while the engine serves (``avatar-server engine``'s health check)."""
    return web.json_response({"status": "ok"})


async def get_stats(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    state = request.app[ENGINE_STATE]
    stats = request.app[ENGINE_FAULTS].stats()
    stats["sessions"] = dict(Counter(s.status.value for s in state.sessions.values()))
    stats["active"] = state.active_count()
    stats["queued"] = sum(1 for s in state.sessions.values() if s.queued)
    stats["alive"] = state.alive
    stats["peakAlive"] = state.peak_alive
    return web.json_response(stats)


async def reset_stats(request: web.Request) -> web.StreamResponse:
    _require_api_key(request)
    request.app[ENGINE_FAULTS].reset_stats()
    state = request.app[ENGINE_STATE]
    state.peak_alive = state.alive
    return web.Response(status=204)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
