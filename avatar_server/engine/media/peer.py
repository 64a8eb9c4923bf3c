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
    {"type": "client_event", "tool": "<name>", "args": {...}}   (Runway's: a client_event tool call)
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
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamTrack

from avatar_server import jsonlimits
from avatar_server.engine.media.audio import AvatarAudioTrack, MicLevel
from avatar_server.engine.media.conversation import (
    MAX_QUESTION_CHARS,
    KnowledgeSource,
    Reply,
    ToolCall,
    answer,
    describe_result,
    match_tool,
    name_words,
)
from avatar_server.engine.media.portrait import avatar_seed
from avatar_server.engine.media.speech import SpeechSynth, voice_of_avatar
from avatar_server.engine.media.video import AvatarVideoTrack, FrameRenderer
from avatar_server.engine.presets import preset_documents, preset_of

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 30.0
MAX_MESSAGE_BYTES = 16_384
MAX_PENDING_REPLIES = 4

# a backend_rpc tool call: (tool name, args) → {"result": <JSON>} or {"error": "<message>"}
BackendCall = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# one tool call of the conversation, told to the owner: (call {id, name, arguments}, result {id, name,
# result, error, durationMs}) — the transcript's toolCalls / toolResults
ToolTurn = Callable[[dict[str, Any], dict[str, Any]], None]


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
        tools: list[dict[str, Any]] | None = None,
        call_backend: BackendCall | None = None,
        on_tool: ToolTurn | None = None,
    ) -> None:
        self.session_id = session_id
        self.tools = [t for t in tools or [] if isinstance(t, dict)]
        self._call_backend = call_backend
        self._on_tool = on_tool
        self._tool_calls = 0
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
            call = match_tool(text, self.tools) if self.tools else None
            if call is not None:
                await self.say(await self.use_tool(call))
            else:
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

    async def use_tool(self, call: ToolCall) -> str:
        """Call the tool the visitor asked for; what the avatar says about it.

        ``client_event``: Runway's ``{"type": "client_event", "tool", "args"}`` on the data channel (the
        page gets it). ``backend_rpc``: ``call_backend`` (the server's channel: the site's backend); its
        result, or its error, is said."""
        words = " ".join(name_words(call.name))
        if call.missing:
            return f"To {words} I need the {', '.join(call.missing)}."
        self._tool_calls += 1
        call_id = f"call_{self._tool_calls}"
        started = time.monotonic()
        outcome: dict[str, Any]
        if call.tool.get("type") == "client_event":
            self.send({"type": "client_event", "tool": call.name, "args": call.args})
            outcome = {"result": None}
        elif self._call_backend is None:
            outcome = {"error": "no backend is connected for this session"}
        else:
            try:
                outcome = await self._call_backend(call.name, call.args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the channel broke: an error result, the call goes on
                log.warning("session %s: tool %s failed: %s", self.session_id, call.name, exc)
                outcome = {"error": "the tool could not be reached"}
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        if self._on_tool is not None:
            self._call(self._on_tool, {"id": call_id, "name": call.name, "arguments": call.args},
                       {"id": call_id, "name": call.name, "result": outcome.get("result"),
                        "error": outcome.get("error"), "durationMs": duration_ms})
        if outcome.get("error") is not None:
            return f"Sorry, I could not {words}: {outcome['error']}."
        if call.tool.get("type") == "client_event":
            return f"Okay, {words}: done."
        return f"Here is what I found: {describe_result(outcome.get('result'))}."

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
