"""The broker: one browser's signal socket for one session.

It listens to the session's events (Redis pub/sub, so any instance's changes reach it),
hands over the credentials the moment the session is READY (READY → RUNNING starts the
cap clock), forwards warnings and the end, and turns client ``end`` into an end with
reason ``client``. When the socket goes away before the session ended, an ``abandon``
timer starts; a reconnect within the grace period cancels it.

The socket itself is behind ``SignalTransport`` so this logic is tested without aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import AvatarServerError
from ..models.sessions import EndReason, SessionRecord, SessionStatus, iso
from ..models.signal import (
    PONG,
    ProtocolError,
    credentials_message,
    dump,
    ended_message,
    error_message,
    parse_client,
)
from ..sessions.service import SessionService

log = logging.getLogger("avatar_server.signal")

RATE_WINDOW = 10.0
RATE_MAX = 30  # client messages per window


class SignalTransport(Protocol):
    async def send(self, text: str) -> None: ...
    async def receive(self) -> str | bytes | None: ...  # None: the socket closed
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class SignalBroker:
    def __init__(self, service: SessionService, *, ice_servers: Sequence[dict[str, Any]] = ()) -> None:
        self.svc = service
        self.ice_servers = tuple(ice_servers)

    async def serve(self, session_id: str, transport: SignalTransport) -> None:
        svc = self.svc
        ended = False
        await svc.client_connected(session_id)
        try:
            async with svc.bus.listen(session_id) as events:
                rec = await svc.get(session_id)
                if rec.status is SessionStatus.ENDED:
                    await self._send_ended(transport, rec)
                    ended = True
                    return
                frame = await svc.status_frame(rec)
                await transport.send(dump(frame))
                if frame.get("position"):
                    svc.room.note_announced(session_id, frame["position"])
                delivered = False
                if rec.status in (SessionStatus.READY, SessionStatus.RUNNING):
                    delivered = await self._deliver(session_id, transport)
                reader = asyncio.create_task(self._read(transport, events), name=f"signal-read-{session_id}")
                try:
                    with svc.room.listen(session_id, events):  # its place in line, while it waits
                        ended = await self._pump(session_id, transport, events, delivered)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
        finally:
            if not ended:
                with contextlib.suppress(AvatarServerError):
                    await svc.client_gone(session_id)

    async def _pump(
        self, session_id: str, transport: SignalTransport, events: asyncio.Queue[dict[str, Any]], delivered: bool
    ) -> bool:
        """Returns True once the session has ended (and the client was told)."""
        svc = self.svc
        while True:
            event = await events.get()
            kind = event.get("type")
            if kind == "_client_closed":
                return False
            if kind == "_client":
                msg = event["message"]
                if msg == "ping":
                    await transport.send(dump(PONG))
                elif msg == "end":
                    rec = await svc.end(session_id, EndReason.CLIENT)
                    await self._send_ended(transport, rec)
                    return True
                continue
            if kind == "_client_error":
                await transport.send(dump(error_message(event["code"], event["message"])))
                if event.get("fatal"):
                    await transport.close(1008, event["code"])
                    return False
                continue
            if kind == "resync":  # the event bus lost its subscription a moment: re-read the record
                rec = await svc.get(session_id)
                if rec.status is SessionStatus.ENDED:
                    await self._send_ended(transport, rec)
                    return True
                event = await svc.status_frame(rec)
                kind = "status"
            if kind == "ended":
                rec = await svc.get(session_id)
                await self._send_ended(transport, rec)
                return True
            if kind == "status":
                if event.get("status") == SessionStatus.READY.value and not delivered:
                    await transport.send(dump(event))
                    delivered = await self._deliver(session_id, transport)
                    continue
                await transport.send(dump(event))
                continue
            if kind == "warning":
                await transport.send(dump(event))

    async def _deliver(self, session_id: str, transport: SignalTransport) -> bool:
        try:
            rec, creds = await self.svc.deliver(session_id)
        except AvatarServerError as exc:
            await transport.send(dump(error_message(exc.code, exc.message)))
            return False
        await transport.send(
            dump(
                credentials_message(
                    session_id=rec.id,
                    transport=creds.transport,
                    server_url=creds.serverUrl,
                    token=creds.token,
                    room_name=creds.roomName,
                    ends_at=iso(rec.endsAt),
                    max_duration=rec.maxDuration,
                    ice_servers=self.ice_servers,
                )
            )
        )
        return True

    async def _send_ended(self, transport: SignalTransport, rec: SessionRecord) -> None:
        with contextlib.suppress(Exception):
            await transport.send(dump(ended_message(rec.endReason)))
            await transport.close(1000, "session ended")

    async def _read(self, transport: SignalTransport, events: asyncio.Queue[dict[str, Any]]) -> None:
        window_start = time.monotonic()
        count = 0
        while True:
            raw = await transport.receive()
            if raw is None:
                await events.put({"type": "_client_closed"})
                return
            now = time.monotonic()
            if now - window_start > RATE_WINDOW:
                window_start, count = now, 0
            count += 1
            if count > RATE_MAX:
                await events.put(
                    {"type": "_client_error", "code": "rate_limited", "message": "too many messages", "fatal": True}
                )
                return
            try:
                msg = parse_client(raw)
            except ProtocolError as exc:
                await events.put({"type": "_client_error", "code": exc.code, "message": exc.message})
                continue
            await events.put({"type": "_client", "message": msg.type})
