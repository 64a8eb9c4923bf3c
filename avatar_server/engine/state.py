"""Realtime sessions of the local engine: lifecycle and timers (no HTTP; the create body is
checked before it gets here, by ``engine.http.bodies.validate_create_body``).

Lifecycle (Runway's statuses, ``runway.RealtimeStatus``; transitions checked by its ``can_become``):

    NOT_READY ──provisioning delay──▶ READY ──media connects──▶ RUNNING ──maxDuration / peer closes──▶ COMPLETED
        │  (queued=true while over             │  (consumed first)          │
        │   the concurrency limit)             │ ready_ttl unconsumed,      │
        │                                      │ connect_grace consumed     │
        ├──fail-next──────────────────────▶ FAILED ◀─────────┘              ▼
        └──DELETE─────────────────────────▶ CANCELLED ◀──DELETE── READY    CANCELLED (DELETE)

Decisions where Runway's material is silent:

- Consume spends the key but leaves the session READY; it becomes RUNNING when the media
  peer connects (as Runway's does when the WebRTC connection is up), and the engine bills
  (``duration``) and counts ``maxDuration`` from that moment.
- A consumed session whose media does not connect within ``connect_grace`` (no offer, or
  a peer that never connects or closes first) becomes FAILED with ``failureCode:
  "not_connected"``: the credentials were one-time, a new session is needed.
- A COMPLETED session's ``duration`` is whole seconds, ``min(maxDuration,
  max_duration_limit)`` when it ran to its end.
- READY can be cancelled (the doc lists READY → RUNNING | FAILED only, but a
  DELETE of an unclaimed session must end it). DELETE of a terminal session
  is a no-op; of an unknown id, 404.
- A READY session not consumed within ``ready_ttl`` becomes FAILED with
  ``failureCode: "expired"``; consuming it afterwards answers 410.
- Consume: 401 for a missing or wrong key (a session has no key before
  READY), 409 ``Session already consumed`` the second time, 410 for an
  expired, failed or cancelled session that was never consumed.
- Sessions counted against ``concurrency_limit``: provisioning (NOT_READY,
  not queued), READY and RUNNING. Queued sessions start provisioning, FIFO,
  as soon as a slot frees.

All timers are ``loop.call_later`` handles owned by ``EngineState``;
``close()`` cancels them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from avatar_server.engine.config import EngineConfig
from avatar_server.engine.errors import EngineError
from avatar_server.runway import RealtimeStatus, iso_ms

log = logging.getLogger(__name__)

TERMINAL_RETENTION_SECONDS = 3600.0


@dataclass
class EngineSession:
    id: str
    created_at: float
    status: RealtimeStatus
    queued: bool
    avatar: dict[str, Any]
    max_duration: int
    personality: str | None = None
    start_script: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    session_key: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    consumed: bool = False
    rtc_token: str | None = field(default=None, repr=False)
    started_at: float | None = None
    ended_at: float | None = None
    failure: str | None = None
    failure_code: str | None = None
    ready_at: float | None = None
    duration: int | None = None
    # The custom avatar's record from avatar_lookup (None for presets).
    avatar_record: dict[str, Any] | None = None
    # Set by fail-next at create: (failureCode, failure) used instead of READY.
    planned_failure: tuple[str, str] | None = None
    # The conversation's turns as the media peer had them: {role, content, timestamp} (Runway's shape).
    transcript: list[dict[str, Any]] = field(default_factory=list)

    @property
    def media_allowed(self) -> bool:
        """Consumed and not ended: its media peer may connect (READY) or is connected (RUNNING)."""
        return self.consumed and self.status in (RealtimeStatus.READY, RealtimeStatus.RUNNING)

    @property
    def counts_toward_limit(self) -> bool:
        if self.status is RealtimeStatus.NOT_READY:
            return not self.queued
        return self.status in (RealtimeStatus.READY, RealtimeStatus.RUNNING)


Listener = Callable[[EngineSession, RealtimeStatus | None, RealtimeStatus], None]
AvatarLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


class EngineState:
    def __init__(self, config: EngineConfig, *, avatar_lookup: AvatarLookup | None = None) -> None:
        self.config = config
        self.sessions: dict[str, EngineSession] = {}
        self._avatar_lookup = avatar_lookup
        self._rng = random.Random(config.seed)
        self._queue: deque[str] = deque()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._listeners: list[Listener] = []
        self._fail_next: deque[tuple[str, str]] = deque()
        self._closed = False
        self.alive = 0  # sessions not terminal (created, not yet ended)
        self.peak_alive = 0  # the most alive at once since the stats were reset

    # -- queries ---------------------------------------------------------------------------

    def get(self, id: str) -> EngineSession:
        session = self.sessions.get(id)
        if session is None:
            raise EngineError(404, "Realtime session not found")
        return session

    def active_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.counts_toward_limit)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    # -- commands --------------------------------------------------------------------------

    def check_open(self) -> None:
        """503 while the engine shuts down (checked before a create body is judged)."""
        if self._closed:
            raise EngineError(503, "Engine is shutting down")

    async def create(self, fields: dict[str, Any]) -> EngineSession:
        """A new session from a create body's checked fields (``validate_create_body``'s result)."""
        self.check_open()
        avatar_record = None
        if fields["avatar"]["type"] == "custom":
            avatar_record = await self._lookup_custom_avatar(fields["avatar"]["avatarId"])
        now = time.time()
        self._prune(now)
        session = EngineSession(
            id=str(uuid.uuid4()),
            created_at=now,
            status=RealtimeStatus.NOT_READY,
            queued=False,
            avatar=fields["avatar"],
            max_duration=fields["maxDuration"],
            personality=fields.get("personality"),
            start_script=fields.get("startScript"),
            tools=fields.get("tools", []),
            avatar_record=avatar_record,
            planned_failure=self._fail_next.popleft() if self._fail_next else None,
        )
        self.sessions[session.id] = session
        self.alive += 1
        self.peak_alive = max(self.peak_alive, self.alive)
        limit = self.config.concurrency_limit
        if limit is not None and (self._queue or self.active_count() - 1 >= limit):
            session.queued = True
            self._queue.append(session.id)
        self._notify(session, None, RealtimeStatus.NOT_READY)
        if not session.queued:
            self._start_provisioning(session)
        return session

    async def cancel(self, id: str) -> None:
        session = self.get(id)
        if session.status.is_terminal:
            return
        self._transition(session, RealtimeStatus.CANCELLED)

    def consume(self, id: str, session_key: str) -> dict[str, str]:
        """Spend the one-time READY key (the session stays READY until its media connects).
        Returns ``{token, roomName}`` (no url)."""
        session = self.get(id)
        if (
            not session_key
            or session.session_key is None
            or not hmac.compare_digest(session.session_key, session_key)
        ):
            raise EngineError(401, "Invalid session key")
        if session.consumed:
            raise EngineError(409, "Session already consumed")
        now = time.time()
        if (
            session.status is RealtimeStatus.READY
            and session.expires_at is not None
            and now >= session.expires_at
        ):
            self._expire(session.id)
        if session.status is RealtimeStatus.FAILED and session.failure_code == "expired":
            raise EngineError(410, "Session expired")
        if session.status is not RealtimeStatus.READY:
            raise EngineError(410, f"Session is {session.status.value}")
        session.consumed = True
        session.rtc_token = secrets.token_urlsafe(32)
        self._set_timer(session.id, self.config.connect_grace, self._not_connected, session.id)
        return {"token": session.rtc_token, "roomName": f"engine-{session.id}"}

    def mark_connected(self, id: str) -> None:
        """READY (consumed) → RUNNING: the media peer connected; ``maxDuration`` counts from now."""
        session = self.sessions.get(id)
        if session is None or session.status is not RealtimeStatus.READY or not session.consumed:
            return
        session.started_at = time.time()
        self._transition(session, RealtimeStatus.RUNNING)
        run_for = self.config.max_duration_limit
        if self.config.honour_max_duration:
            run_for = min(session.max_duration, run_for)
        self._set_timer(session.id, run_for, self._run_out, session.id)

    def mark_completed(self, id: str) -> None:
        """The media peer ended: RUNNING → COMPLETED; a consumed session whose peer closed before
        it ever connected → FAILED (``not_connected``). Otherwise a no-op."""
        session = self.sessions.get(id)
        if session is None:
            return
        if session.status is RealtimeStatus.RUNNING:
            self._transition(session, RealtimeStatus.COMPLETED)
        elif session.status is RealtimeStatus.READY and session.consumed:
            self._not_connected(id)

    def fail_next(self, count: int, failure_code: str, failure: str) -> None:
        self._fail_next.extend([(failure_code, failure)] * count)

    def config_changed(self) -> None:
        """Re-check the queue after the concurrency limit changed."""
        self._drain_queue()

    def to_wire(self, s: EngineSession) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": s.id, "createdAt": iso_ms(s.created_at), "status": s.status.value}
        if s.status is RealtimeStatus.NOT_READY:
            wire["queued"] = s.queued
        elif s.status is RealtimeStatus.READY:
            assert s.session_key is not None and s.expires_at is not None
            wire["sessionKey"] = s.session_key
            wire["expiresAt"] = iso_ms(s.expires_at)
        elif s.status is RealtimeStatus.COMPLETED:
            wire["duration"] = s.duration if s.duration is not None else 0
        elif s.status is RealtimeStatus.FAILED:
            wire["failure"] = s.failure or "Session failed"
            wire["failureCode"] = s.failure_code or "internal_error"
        return wire

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._queue.clear()

    # -- internals -------------------------------------------------------------------------

    async def _lookup_custom_avatar(self, avatar_id: str) -> dict[str, Any]:
        path = ["avatar", "avatarId"]
        if self._avatar_lookup is None:
            raise EngineError(
                400,
                "Invalid request body: custom avatars are not available in this engine",
                [{"code": "custom", "path": path, "message": "custom avatars are not available"}],
            )
        record = await self._avatar_lookup(avatar_id)
        if record is None:
            raise EngineError(
                400,
                "Invalid request body: avatar not found",
                [{"code": "custom", "path": path, "message": "Avatar not found"}],
            )
        status = record.get("status")
        if status != "READY":
            raise EngineError(
                400,
                f"Invalid request body: avatar is not ready (status {status})",
                [{"code": "custom", "path": path, "message": f"Avatar is not ready (status {status})"}],
            )
        return record

    def _start_provisioning(self, session: EngineSession) -> None:
        delay = max(0.0, self.config.provisioning_delay.sample(self._rng))
        self._set_timer(session.id, delay, self._provisioned, session.id)

    def _provisioned(self, id: str) -> None:
        session = self.sessions.get(id)
        if session is None or session.status is not RealtimeStatus.NOT_READY:
            return
        if session.planned_failure is not None:
            session.failure_code, session.failure = session.planned_failure
            self._transition(session, RealtimeStatus.FAILED)
            return
        now = time.time()
        session.session_key = secrets.token_urlsafe(32)
        session.ready_at = now
        session.expires_at = now + self.config.ready_ttl
        self._transition(session, RealtimeStatus.READY)
        self._set_timer(session.id, self.config.ready_ttl, self._expire, session.id)

    def _expire(self, id: str) -> None:
        session = self.sessions.get(id)
        if session is None or session.status is not RealtimeStatus.READY:
            return
        session.failure_code = "expired"
        session.failure = "The session was not consumed before its credentials expired"
        self._transition(session, RealtimeStatus.FAILED)

    def _not_connected(self, id: str) -> None:
        session = self.sessions.get(id)
        if session is None or session.status is not RealtimeStatus.READY or not session.consumed:
            return
        session.failure_code = "not_connected"
        session.failure = "The media connection was not made after the credentials were consumed"
        self._transition(session, RealtimeStatus.FAILED)

    def _run_out(self, id: str) -> None:
        self.mark_completed(id)

    def _transition(self, session: EngineSession, new: RealtimeStatus) -> None:
        old = session.status
        if not old.can_become(new):
            raise RuntimeError(f"invalid engine session transition {old.value} → {new.value}")
        now = time.time()
        session.status = new
        self._cancel_timer(session.id)
        if new.is_terminal:
            self.alive -= 1
            session.ended_at = now
            if session.queued:
                session.queued = False
                try:
                    self._queue.remove(session.id)
                except ValueError:
                    pass
            if new is RealtimeStatus.COMPLETED and session.started_at is not None:
                elapsed = now - session.started_at
                session.duration = max(0, min(round(elapsed), session.max_duration))
        log.debug("engine session %s: %s → %s", session.id, old.value, new.value)
        self._notify(session, old, new)
        if new.is_terminal:
            self._drain_queue()

    def _notify(self, session: EngineSession, old: RealtimeStatus | None, new: RealtimeStatus) -> None:
        for fn in list(self._listeners):
            try:
                fn(session, old, new)
            except Exception:
                log.exception("engine session listener failed for %s (%s)", session.id, new.value)

    def _drain_queue(self) -> None:
        if self._closed:
            return
        limit = self.config.concurrency_limit
        while self._queue and (limit is None or self.active_count() < limit):
            session = self.sessions.get(self._queue.popleft())
            if session is None or session.status is not RealtimeStatus.NOT_READY:
                continue
            session.queued = False
            self._start_provisioning(session)

    def _set_timer(self, id: str, delay: float, fn: Callable[[str], None], arg: str) -> None:
        self._cancel_timer(id)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._timers[id] = loop.call_later(delay, self._fire, id, fn, arg)

    def _fire(self, id: str, fn: Callable[[str], None], arg: str) -> None:
        self._timers.pop(id, None)
        try:
            fn(arg)
        except Exception:
            log.exception("engine timer failed for session %s", id)

    def _cancel_timer(self, id: str) -> None:
        handle = self._timers.pop(id, None)
        if handle is not None:
            handle.cancel()

    def _prune(self, now: float) -> None:
        stale = [
            s.id
            for s in self.sessions.values()
            if s.status.is_terminal and s.ended_at is not None and now - s.ended_at > TERMINAL_RETENTION_SECONDS
        ]
        for id in stale:
            del self.sessions[id]
