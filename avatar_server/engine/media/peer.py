"""One visitor's WebRTC peer: the avatar's video and voice, their mic, a data channel.

The visitor makes the offer (non-trickle: it waits for its ICE gathering) and
must offer a video m-line it receives, an audio m-line (sendrecv when its mic
is on), and a data channel (any label). ``EnginePeer.answer`` attaches every
handler, applies the offer, adds the avatar's tracks and returns the complete
answer — aiortc's ``setLocalDescription`` finishes ICE gathering first, so the
answer carries all candidates.

Data channel, client → engine (JSON text):
    {"type": "user_message", "text": "..."}   (also {"type": "chat", "text": "..."})
    {"type": "END_CALL"}
Engine → client:
    {"type": "transcription", "role": "user" | "assistant", "text": "...", "final": true}
    {"type": "error", "message": "..."}         (unparseable input)

Lifecycle: ``NEW → CONNECTED → CLOSED`` (or ``NEW → CLOSED``). ``on_connected``
fires once when ICE+DTLS connect; ``on_closed(reason)`` fires exactly once,
whatever closes the peer once ``answer`` succeeded: END_CALL, the remote
closing, ICE failure, the connect timeout, ``max_duration``, or ``close()``
from the owner. An offer that cannot be answered raises ``OfferError`` and
does not call ``on_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamTrack

from avatar_server import jsonlimits
from avatar_server.engine.media.audio import AvatarAudioTrack, MicLevel
from avatar_server.engine.media.conversation import MAX_QUESTION_CHARS, KnowledgeSource, Reply, answer
from avatar_server.engine.media.portrait import avatar_seed
from avatar_server.engine.media.speech import SpeechSynth, voice_of_avatar
from avatar_server.engine.media.video import AvatarVideoTrack, FrameRenderer
from avatar_server.engine.presets import preset_documents, preset_of

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 30.0
MAX_MESSAGE_BYTES = 16_384
MAX_PENDING_REPLIES = 4


class PeerState(StrEnum):
    NEW = "new"
    CONNECTED = "connected"
    CLOSED = "closed"


class CloseReason(StrEnum):
    END_CALL = "end_call"  # the visitor sent {"type": "END_CALL"}
    REMOTE_CLOSED = "remote_closed"  # the connection closed from the far side
    FAILED = "failed"  # ICE/DTLS failed
    CONNECT_TIMEOUT = "connect_timeout"  # never connected
    MAX_DURATION = "max_duration"  # the peer's own duration limit
    SERVER = "server"  # close() by the owner (session cancelled, shutdown)
    NEGOTIATION_FAILED = "negotiation_failed"  # the offer could not be answered


class OfferError(ValueError):
    """The offer is unusable (bad SDP, or it lacks what the avatar needs)."""


def ice_servers(config: list[dict[str, Any]] | None) -> list[RTCIceServer]:
    """``[{"urls": ..., "username"?: ..., "credential"?: ...}]`` → aiortc's objects."""
    servers = []
    for entry in config or []:
        servers.append(
            RTCIceServer(
                urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential")
            )
        )
    return servers


class EnginePeer:
    def __init__(
        self,
        session_id: str,
        *,
        avatar: dict[str, Any],
        personality: str | None,
        start_script: str | None,
        renderer: FrameRenderer,
        speech: SpeechSynth,
        knowledge: KnowledgeSource | None,
        ice: list[dict[str, Any]] | None,
        on_connected: Callable[[], None],
        on_closed: Callable[[str], None],
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        max_duration: float | None = None,
        on_turn: Callable[[str, str], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.avatar = avatar
        preset = preset_of(avatar)
        self.personality = _first(personality, avatar.get("personality"), preset and preset.personality)
        self.start_script = _first(start_script, avatar.get("startScript"), preset and preset.start_script)
        self.state = PeerState.NEW
        self.close_reason: CloseReason | None = None
        self._speech = speech
        self._voice = voice_of_avatar(avatar)
        self._knowledge = knowledge
        self._on_connected = on_connected
        self._on_closed = on_closed
        self._on_turn = on_turn
        self._connect_timeout = connect_timeout
        self._max_duration = max_duration
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(ice)))
        self.audio = AvatarAudioTrack()
        self.mic = MicLevel()
        self.video = AvatarVideoTrack(
            renderer,
            speech_level=lambda: self.audio.level,
            listening=lambda: self.mic.listening,
            seed=avatar_seed(avatar),
        )
        self._channel: RTCDataChannel | None = None
        self._outbox: list[str] = []
        self._speak_lock = asyncio.Lock()
        self._pending_replies = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ negotiation

    async def answer(self, offer: dict[str, Any]) -> dict[str, str]:
        """Apply the visitor's offer; the complete answer ``{"sdp", "type"}``."""
        pc = self._pc
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
            kinds = {t.kind for t in pc.getTransceivers()}
            if "video" not in kinds or "audio" not in kinds:
                raise OfferError("the offer must include a video and an audio m-line")
            if pc.sctp is None:
                raise OfferError("the offer must include a data channel")
            pc.addTrack(self.video)
            pc.addTrack(self.audio)
            await pc.setLocalDescription(await pc.createAnswer())
        except OfferError:
            await self.close(CloseReason.NEGOTIATION_FAILED)
            raise
        except (
            ValueError,
            KeyError,
            TypeError,
            AssertionError,
            InternalError,
            InvalidAccessError,
            InvalidStateError,
            OperationError,
        ) as exc:
            await self.close(CloseReason.NEGOTIATION_FAILED)
            raise OfferError(f"the offer could not be applied: {exc}") from exc
        self._spawn(self._connect_deadline())
        local = pc.localDescription
        return {"sdp": local.sdp, "type": local.type}

    # ------------------------------------------------------------ events

    async def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        log.debug("session %s: connection %s", self.session_id, state)
        if state == "connected" and self.state is PeerState.NEW:
            self.state = PeerState.CONNECTED
            self._call(self._on_connected)
            if self._max_duration:
                self._spawn(self._duration_limit(self._max_duration))
            if self.start_script:
                self._spawn(self.say(self.start_script))
        elif state == "failed":
            await self.close(CloseReason.FAILED)
        elif state == "closed":
            await self.close(CloseReason.REMOTE_CLOSED)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.mic.consume(track)
        else:
            self._spawn(self._drain(track))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel is None:
            self._channel = channel
            channel.on("message", self._on_message)
            outbox, self._outbox = self._outbox, []
            for text in outbox:
                self._send_text(text)

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        if len(message) > MAX_MESSAGE_BYTES:
            self.send({"type": "error", "message": "message too large"})
            return
        try:
            data = jsonlimits.loads(message)
        except ValueError:  # not JSON, or past jsonlimits' limits (nesting, numbers)
            self.send({"type": "error", "message": "messages must be JSON"})
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "END_CALL":
            self._spawn(self.close(CloseReason.END_CALL))
        elif kind in ("user_message", "chat") and isinstance(data.get("text"), str) and data["text"].strip():
            if self._pending_replies >= MAX_PENDING_REPLIES:
                self.send({"type": "error", "message": "too many messages at once"})
                return
            self._pending_replies += 1
            self._spawn(self._reply_to(data["text"].strip()[:MAX_QUESTION_CHARS]))

    # ------------------------------------------------------------ conversation

    async def _reply_to(self, text: str) -> None:
        try:
            self.send({"type": "transcription", "role": "user", "text": text, "final": True})
            self._turn("user", text)
            reply = await self.reply(text)
            await self.say(reply.text)
        finally:
            self._pending_replies -= 1

    async def reply(self, text: str) -> Reply:
        docs: list[tuple[str, str]] = []
        if self._knowledge is not None:
            try:
                docs = await self._knowledge.passages(self.avatar)
            except Exception:  # a broken knowledge source must not end the call
                log.exception("session %s: knowledge source failed", self.session_id)
        docs = docs or preset_documents(self.avatar)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, answer, text, docs, self.personality)

    async def say(self, text: str) -> None:
        """Send the assistant transcript and speak ``text`` (utterances keep their order)."""
        async with self._speak_lock:
            if self.state is PeerState.CLOSED:
                return
            pcm = await self._speech.synthesize(text, self._voice)
            self.send({"type": "transcription", "role": "assistant", "text": text, "final": True})
            self._turn("assistant", text)
            self.audio.enqueue(pcm)

    def _turn(self, role: str, text: str) -> None:
        """Tell the owner one turn of the conversation (what the visitor said as the engine understood
        it, or what the avatar answered), for the session's transcript."""
        if self._on_turn is not None:
            self._call(self._on_turn, role, text)

    def send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        if self._channel is None:
            self._outbox.append(text)
        else:
            self._send_text(text)

    def _send_text(self, text: str) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(text)
            except Exception as exc:  # the transport went away under us
                log.debug("session %s: data channel send failed: %s", self.session_id, exc)

    # ------------------------------------------------------------ timers

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self._connect_timeout)
        if self.state is PeerState.NEW:
            await self.close(CloseReason.CONNECT_TIMEOUT)

    async def _duration_limit(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.close(CloseReason.MAX_DURATION)

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()

    # ------------------------------------------------------------ lifecycle

    def _spawn(self, coro: Any) -> None:
        if self.state is PeerState.CLOSED:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("session %s: callback %r failed", self.session_id, fn)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self, reason: CloseReason = CloseReason.SERVER) -> None:
        """Stop everything; idempotent. ``on_closed`` gets the first reason."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        self.state = PeerState.CLOSED
        self.close_reason = reason
        try:
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.mic.close()
            self.video.stop()
            self.audio.stop()
            await self._pc.close()
        except Exception:
            log.exception("session %s: error while closing the peer", self.session_id)
        finally:
            self._closed.set_result(None)
            log.info("session %s: media peer closed (%s)", self.session_id, reason.value)
            if reason is not CloseReason.NEGOTIATION_FAILED:  # nothing started: the owner just gets the error
                self._call(self._on_closed, reason.value)


def _first(*values: Any) -> str | None:
    """The first of ``values`` that is a string (an empty string counts: it means 'say nothing')."""
    return next((v for v in values if isinstance(v, str)), None)
