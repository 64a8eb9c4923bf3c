"""All media peers of one engine: one peer per session, many sessions at once.

Shared between peers: the speech synthesiser, the knowledge source, and the
frame renderers (a renderer is read-only after construction, so every stream
of the same avatar shares one set of pre-computed planes).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from avatar_server.engine.errors import BadRequest, Conflict
from avatar_server.engine.media.conversation import KnowledgeSource
from avatar_server.engine.media.peer import (
    CONNECT_TIMEOUT_SECONDS,
    BackendCall,
    CloseReason,
    EnginePeer,
    OfferError,
    ToolTurn,
)
from avatar_server.engine.media.portrait import portrait_for
from avatar_server.engine.media.speech import SpeechSynth
from avatar_server.engine.media.video import FrameRenderer

log = logging.getLogger(__name__)

MAX_OFFER_SDP_CHARS = 100_000
_REMEMBERED_SESSIONS = 10_000
_RENDERER_CACHE = 32


class MediaManager:
    def __init__(
        self,
        *,
        ice_servers: list[dict[str, Any]] | None = None,
        knowledge: KnowledgeSource | None = None,
        speech: SpeechSynth | None = None,
        connect_timeout: float | Callable[[], float] = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        """``connect_timeout`` may be a callable, read at each offer (a setting that can change)."""
        self._ice_servers = list(ice_servers or [])
        self._knowledge = knowledge
        self._speech = speech or SpeechSynth()
        self._connect_timeout = connect_timeout if callable(connect_timeout) else (lambda: connect_timeout)
        self._peers: dict[str, EnginePeer] = {}
        self._claimed: OrderedDict[str, None] = OrderedDict()  # sessions that got (or are getting) a peer
        self._renderers: OrderedDict[int, FrameRenderer] = OrderedDict()
        self._closing: asyncio.Future[None] | None = None

    def active_count(self) -> int:
        return len(self._peers)

    def peer(self, session_id: str) -> EnginePeer | None:
        return self._peers.get(session_id)

    async def answer(
        self,
        session_id: str,
        offer: dict[str, Any],
        *,
        avatar: dict[str, Any],
        personality: str | None,
        start_script: str | None,
        on_connected: Callable[[], None],
        on_closed: Callable[[str], None],
        max_duration: float | None = None,
        on_turn: Callable[[str, str], None] | None = None,
        tools: list[dict[str, Any]] | None = None,
        call_backend: BackendCall | None = None,
        on_tool: ToolTurn | None = None,
    ) -> dict[str, str]:
        """Answer a visitor's offer for ``session_id``; ``{"sdp", "type"}``.

        Raises ``Conflict`` for a second offer (or while shutting down) and
        ``BadRequest`` for an unusable offer (the session may then retry).
        """
        if self._closing is not None:
            raise Conflict("the media engine is shutting down")
        if session_id in self._claimed:
            raise Conflict("this session already has a media connection")
        sdp, kind = _check_offer(offer)
        self._claim(session_id)
        try:
            renderer = await self._renderer_for(avatar)

            def closed(reason: str) -> None:
                self._peers.pop(session_id, None)
                on_closed(reason)

            peer = EnginePeer(
                session_id,
                avatar=avatar,
                personality=personality,
                start_script=start_script,
                renderer=renderer,
                speech=self._speech,
                knowledge=self._knowledge,
                ice=self._ice_servers,
                on_connected=on_connected,
                on_closed=closed,
                connect_timeout=self._connect_timeout(),
                max_duration=max_duration,
                on_turn=on_turn,
                tools=tools,
                call_backend=call_backend,
                on_tool=on_tool,
            )
            self._peers[session_id] = peer
            try:
                return await peer.answer({"sdp": sdp, "type": kind})
            except OfferError as exc:
                raise BadRequest(str(exc)) from exc
        except BaseException:
            self._peers.pop(session_id, None)
            self._claimed.pop(session_id, None)
            raise

    async def close_session(self, session_id: str) -> bool:
        """Close the session's peer (``on_closed`` gets ``"server"``); False if it had none."""
        peer = self._peers.get(session_id)
        if peer is None:
            return False
        await peer.close(CloseReason.SERVER)
        return True

    async def close(self) -> None:
        """Close every peer; idempotent."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await asyncio.gather(*(p.close(CloseReason.SERVER) for p in list(self._peers.values())))
        finally:
            self._peers.clear()
            self._closing.set_result(None)

    def _claim(self, session_id: str) -> None:
        self._claimed[session_id] = None
        while len(self._claimed) > _REMEMBERED_SESSIONS:
            self._claimed.popitem(last=False)

    async def _renderer_for(self, avatar: dict[str, Any]) -> FrameRenderer:
        """Decode/generate the portrait and pre-compute its planes off the loop (cached)."""
        loop = asyncio.get_running_loop()
        portrait = await loop.run_in_executor(None, portrait_for, avatar)
        key = id(portrait)  # the cached renderer holds the portrait, so the id stays unique
        renderer = self._renderers.get(key)
        if renderer is None or renderer.portrait is not portrait:
            renderer = await loop.run_in_executor(None, FrameRenderer, portrait)
            self._renderers[key] = renderer
            while len(self._renderers) > _RENDERER_CACHE:
                self._renderers.popitem(last=False)
        else:
            self._renderers.move_to_end(key)
        return renderer


def _check_offer(offer: Any) -> tuple[str, str]:
    if not isinstance(offer, dict):
        raise BadRequest("the body must be a JSON object {sdp, type}")
    sdp, kind = offer.get("sdp"), offer.get("type")
    if kind != "offer":
        raise BadRequest('"type" must be "offer"')
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_OFFER_SDP_CHARS:
        raise BadRequest('"sdp" must be an SDP offer')
    return sdp, kind
