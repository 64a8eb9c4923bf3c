"""The engine's aiohttp application: Runway's API, its media peer, and a control API.

Mounted by the server at ``/engine`` (``app.add_subapp("/engine", create_engine_app(...))``)
or served alone by ``avatar-server engine --port N``. Routes: ``engine.http.sessions``
(``/v1/realtime_sessions``), ``rtc`` (``/v1/rtc/{id}``), ``conversations``, ``voices``,
``catalog`` (with a ``catalog_store``) and ``control`` (``/_control/…``, ``/healthz``).
Errors are Runway's shape ``{"error": "<message>"}`` (400 may add ``issues``): ``errors``.

Every background task is owned here: the engine's cleanup context closes the backends'
sockets, the media peers, the session timers and the voices' preview renders, in that order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiohttp import web

from avatar_server.engine.backend import BackendHub
from avatar_server.engine.catalog import CatalogKnowledge, EngineCatalog
from avatar_server.engine.config import EngineConfig
from avatar_server.engine.errors import EngineError
from avatar_server.engine.faults import FaultInjector
from avatar_server.engine.http.catalog import add_catalog_routes
from avatar_server.engine.http.context import (
    ENGINE_BACKENDS,
    ENGINE_CONTEXT,
    ENGINE_FAULTS,
    ENGINE_MEDIA,
    ENGINE_STATE,
    ENGINE_VOICES,
    EngineContext,
)
from avatar_server.engine.http.control import add_control_routes
from avatar_server.engine.http.conversations import TRANSCRIPT_MAX, add_conversation_routes
from avatar_server.engine.http.errors import runway_errors
from avatar_server.engine.http.rtc import add_rtc_routes
from avatar_server.engine.http.sessions import add_session_routes
from avatar_server.engine.http.voices import add_voice_routes
from avatar_server.engine.media.conversation import KnowledgeSource
from avatar_server.engine.media.manager import MediaManager
from avatar_server.engine.media.speech import SpeechSynth
from avatar_server.engine.state import AvatarLookup, EngineSession, EngineState
from avatar_server.engine.store import EngineCatalogStore
from avatar_server.engine.voices import EngineVoices
from avatar_server.runway import REALTIME_TERMINAL, RealtimeStatus, iso_ms

MAX_BODY = 6 * 1024 * 1024  # an avatar with a 5 MB data-URI image and the rest of its fields


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
    app = web.Application(middlewares=[runway_errors], client_max_size=MAX_BODY)
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
    app[ENGINE_CONTEXT] = EngineContext(
        api_keys=api_keys, public_url=public_url.rstrip("/") if public_url else None
    )
    app.cleanup_ctx.append(_engine_ctx)

    add_session_routes(app)
    add_conversation_routes(app, state)
    add_voice_routes(app, voices)
    if catalog is not None:
        add_catalog_routes(app, catalog)
    add_control_routes(app)
    return app


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[ENGINE_BACKENDS].close()
    await app[ENGINE_MEDIA].close()
    await app[ENGINE_STATE].close()
    await app[ENGINE_VOICES].close()


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


def _wire_media(app: web.Application, state: EngineState, media: MediaManager, backends: BackendHub) -> None:
    """The media peer follows the session: it may connect once the session is consumed and until
    it ends; its connection makes the session RUNNING, its close completes it (or fails it, if it
    never connected), and a session that ends any other way closes its peer."""
    closing: set[asyncio.Future[Any]] = set()

    def get_session(session_id: str) -> EngineSession | None:
        session = state.sessions.get(session_id)
        if session is not None and not session.media_allowed:
            state_name = session.status.value if session.consumed else "not consumed"
            raise EngineError(409, f"Session is {state_name}")
        return session

    def on_terminal(session: EngineSession, old: RealtimeStatus | None, new: RealtimeStatus) -> None:
        if new not in REALTIME_TERMINAL:
            return
        if media.peer(session.id):
            task = asyncio.ensure_future(media.close_session(session.id))
            closing.add(task)
            task.add_done_callback(closing.discard)
        ended = asyncio.ensure_future(backends.end(session.id))  # its backend channel goes too
        closing.add(ended)
        ended.add_done_callback(closing.discard)

    def on_tool(session_id: str, call: dict[str, Any], result: dict[str, Any]) -> None:
        session = state.sessions.get(session_id)
        if session is not None and len(session.transcript) < TRANSCRIPT_MAX:
            # Runway's transcript: an assistant entry with no content carries the call and its result
            session.transcript.append({"role": "assistant", "content": None, "timestamp": iso_ms(time.time()),
                                       "toolCalls": [call], "toolResults": [result]})

    def on_turn(session_id: str, role: str, text: str) -> None:
        session = state.sessions.get(session_id)
        if session is not None and len(session.transcript) < TRANSCRIPT_MAX:
            session.transcript.append({"role": role, "content": text, "timestamp": iso_ms(time.time())})

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
