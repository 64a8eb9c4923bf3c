"""The session lifecycle service: create, provision (in the background), deliver, end.

State lives in Redis (``store.sessions``); this object owns only in-process work: the
provisioning tasks it started. Every end path goes through ``end()``, which moves the
record to ENDED atomically (removing its timers), cancels the upstream session, and
tells the client. Deadlines are Redis timers (``sessions.timers``), so a restarted or
surviving instance enforces them.

The service builds its collaborators and hands each what it needs (the store, the
upstream, callbacks through a narrow protocol); none of them imports this module:
``provisioner`` (create, watch, consume), ``reconcile`` (the create journal), ``cancels``
(upstream cancels and their retries), ``recovery`` (what a dead instance left), ``tasks``
(the in-process tasks). What they share is in ``lifecycle`` and ``timer_names``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import AvatarServerError, Conflict, NotFound, UpstreamTimeout, ValidationFailed
from ..models.session_views import SessionPage, SessionView
from ..models.sessions import (
    Credentials,
    EndReason,
    SessionCreate,
    SessionRecord,
    SessionStatus,
    sources_of,
)
from ..models.signal import ended_message, status_message, waiting_message
from ..runway import RealtimeStatus
from ..store.events import EventBus
from ..store.sessions import SessionStore, TransitionRefused
from ..upstream import UpstreamClient
from ..upstream.budget import RequestBudget
from .cancels import UpstreamCancels
from .lifecycle import (
    UPSTREAM_END_REASONS,
    LifecycleConfig,
    SessionObserver,
    ended_error,
    upstream_end_reason,
)
from .provisioner import Provisioner
from .reconcile import CreateReconciler
from .recovery import Recovery
from .room import WaitingRoom
from .tasks import SessionTasks
from .timer_names import WARNINGS, TimerKind, session_timers

log = logging.getLogger("avatar_server.sessions")


class SessionService:
    def __init__(
        self,
        *,
        store: SessionStore,
        bus: EventBus,
        upstream: UpstreamClient,
        config: LifecycleConfig,
        room: WaitingRoom,
        budget: RequestBudget | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.upstream = upstream
        self.config = config
        self.room = room
        self.budget = budget
        self.instance_id = uuid.uuid4().hex[:12]
        self.tasks = SessionTasks()
        self._observers: list[SessionObserver] = []
        self._closed = False
        # journals creates, reconciles lost ones (own task, started by the app)
        self.reconciler = CreateReconciler(store=store, upstream=upstream, instance_id=self.instance_id,
                                           lease_seconds=config.lease_seconds)
        self.cancels = UpstreamCancels(upstream=upstream, store=store, tasks=self.tasks, free_slot=self.free_slot)
        self.provisioner = Provisioner(sessions=self, store=store, upstream=upstream, budget=budget, room=room,
                                       reconciler=self.reconciler, tasks=self.tasks, config=config,
                                       instance_id=self.instance_id)
        self.recovery = Recovery(sessions=self, store=store, room=room, tasks=self.tasks, provisioner=self.provisioner,
                                 reconciler=self.reconciler, instance_id=self.instance_id,
                                 lease_seconds=config.lease_seconds)

    # --- create ----------------------------------------------------------------------
    def new_record(
        self,
        req: SessionCreate,
        *,
        site_id: str | None = None,
        origin: str | None = None,
        max_duration_ceiling: int | None = None,
    ) -> SessionRecord:
        """A PROVISIONING record for ``req`` (not stored yet); refuses a ``maxDuration`` over the ceiling."""
        if self._closed:
            raise AvatarServerError("the server is shutting down", code="shutting_down")
        ceiling = min(self.config.cap_seconds, max_duration_ceiling or self.config.cap_seconds)
        max_duration = req.maxDuration if req.maxDuration is not None else ceiling
        if max_duration > ceiling:
            raise ValidationFailed(
                f"maxDuration may be at most {ceiling} seconds", field="maxDuration", limit=ceiling
            )
        return SessionRecord(
            id=str(uuid.uuid4()),
            status=SessionStatus.PROVISIONING,
            avatar=req.avatar.model_dump(),
            maxDuration=max_duration,
            personality=req.personality,
            startScript=req.startScript,
            tools=[t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,  # no "enum": null
            createdAt=time.time(),
            siteId=site_id,
            origin=origin,
        )

    async def open(self, record: SessionRecord, *, waiting: bool) -> tuple[SessionRecord, str]:
        """Store an admitted record and start provisioning it (unless it ``waiting`` in the room).

        Returns (record, clientToken). The ``provision`` deadline counts from now, waiting included."""
        if waiting:
            record = record.model_copy(update={"inRoom": True, "queued": True})
        client_token = "ct_" + secrets.token_urlsafe(32)
        if not waiting:
            # the lease first: a sweep on another instance must never see it unowned and start it too
            await self.store.take_lease(record.id, self.instance_id, self.config.lease_seconds)
        await self.store.create(
            record,
            client_token,
            timers=[(TimerKind.PROVISION.of(record.id), record.createdAt + self.config.provision_timeout)],
            ttl_token=int(self.config.provision_timeout + self.config.ready_timeout + self.config.cap_seconds + 3600),
        )
        log.info("session created", extra={"session_id": record.id, "avatar": record.avatar, "waiting": waiting})
        if not waiting:
            self.provisioner.start(record)
        else:
            # a slot may have freed between entering and storing: serve whoever is first now
            await self.start_granted(await self.room.grant())
        return record, client_token

    async def start_granted(self, session_ids: list[str]) -> None:
        """Provision the sessions the waiting room just gave a slot (on this instance)."""
        for sid in session_ids:
            rec = await self.store.get(sid)
            if rec is None or rec.status is SessionStatus.ENDED:
                # ended while it waited (or never stored): hand its slot on
                await self.free_slot(sid)
                continue
            if await self.store.take_lease(sid, self.instance_id, self.config.lease_seconds):
                await self.publish_status(rec)
                self.provisioner.start(rec)

    async def free_slot(self, session_id: str) -> None:
        """The session's upstream session is terminal (or never existed): its slot serves the next."""
        await self.start_granted(await self.room.release(session_id))

    # --- read ------------------------------------------------------------------------
    async def get(self, session_id: str) -> SessionRecord:
        rec = await self.store.get(session_id)
        if rec is None:
            raise NotFound(f"no session {session_id}", code="session_not_found")
        return rec

    async def find(self, session_id: str) -> SessionRecord | None:
        """The session, or None if there is none (``get`` raises instead)."""
        return await self.store.get(session_id)

    async def session_of_client_token(self, client_token: str) -> str | None:
        """The id of the session this clientToken was issued for (None: unknown, or long gone)."""
        return await self.store.session_for_client_token(client_token)

    async def view(self, rec: SessionRecord) -> SessionView:
        """The record as the API shows it (with its place in line while it waits)."""
        waiting = None
        if rec.inRoom and rec.status is SessionStatus.PROVISIONING:
            waiting = await self.room.waiting(rec.id)
        return SessionView.from_record(rec, waiting)

    async def page(self, *, active: bool, limit: int, cursor: float | None) -> SessionPage:
        """Sessions not yet ENDED (``active``) or ENDED, newest first; ``cursor``: continue below it."""
        records, next_cursor = await self.store.list(active=active, limit=limit, cursor=cursor)
        return SessionPage(
            data=[await self.view(r) for r in records],
            hasMore=next_cursor is not None,
            nextCursor=None if next_cursor is None else f"{next_cursor:.0f}",
        )

    async def wait_ready(self, session_id: str, timeout: float) -> SessionRecord:
        """Wait until the session is READY or RUNNING; raise the end reason as an error if it ENDs."""
        deadline = time.monotonic() + timeout
        async with self.bus.listen(session_id) as q:
            while True:
                rec = await self.get(session_id)
                if rec.status in (SessionStatus.READY, SessionStatus.RUNNING):
                    return rec
                if rec.status is SessionStatus.ENDED:
                    raise ended_error(rec)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UpstreamTimeout("the avatar session did not become ready in time", code="provision_timeout")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.get(), min(left, 1.0))

    # --- deliver ----------------------------------------------------------------------
    async def deliver(self, session_id: str) -> tuple[SessionRecord, Credentials]:
        """Hand the credentials to the client: READY → RUNNING (the cap clock starts now).

        Calling it again on a RUNNING session hands the same credentials again (a reconnecting client)."""
        rec = await self.get(session_id)
        if rec.status is SessionStatus.READY:
            now = time.time()
            ends = now + rec.maxDuration
            add = [(TimerKind.CAP.of(rec.id), ends),
                   (TimerKind.CHECK.of(rec.id), now + self.config.upstream_check_interval)]
            for kind, secs in WARNINGS:
                if rec.maxDuration >= secs:
                    add.append((kind.of(rec.id), ends - secs))
            try:
                await self.store.transition(
                    rec,
                    [SessionStatus.READY],
                    SessionStatus.RUNNING,
                    {"startedAt": now, "endsAt": ends},
                    remove_timers=[TimerKind.READY.of(rec.id)],
                    add_timers=add,
                )
            except TransitionRefused:
                pass  # delivered concurrently (RUNNING) or ended: re-read below
            rec = await self.get(session_id)
            if rec.status is SessionStatus.RUNNING and rec.startedAt == now:
                log.info("session delivered", extra={"session_id": rec.id})
                await self.publish_status(rec)
                self._notify("session_started", rec)
        if rec.status is SessionStatus.ENDED:
            raise ended_error(rec)
        if rec.status is not SessionStatus.RUNNING:
            raise Conflict("the session is not ready yet", code="session_not_ready", status=rec.status.value)
        creds = await self.store.get_credentials(rec.id)
        if creds is None:
            raise Conflict("the session's credentials are no longer available", code="credentials_gone")
        return rec, creds

    # --- end -------------------------------------------------------------------------
    async def end(self, session_id: str, reason: EndReason, detail: str | None = None, **fields: Any) -> SessionRecord:
        """End the session (idempotent): ENDED atomically, upstream cancelled, client told."""
        rec = await self.get(session_id)
        if rec.status is SessionStatus.ENDED:
            return rec
        if reason is EndReason.PROVISION_TIMEOUT and rec.queued:
            reason = EndReason.QUEUE_TIMEOUT  # the deadline came while it waited in a queue
        try:
            await self.store.transition(
                rec,
                sources_of(SessionStatus.ENDED),
                SessionStatus.ENDED,
                {"endedAt": time.time(), "endReason": reason.value, "endDetail": detail, "queued": False, **fields},
                remove_timers=session_timers(rec.id),
            )
        except TransitionRefused:
            return await self.get(session_id)
        self.provisioner.drop(rec.id)
        task = self.tasks.step_of(rec.id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await self.store.drop_credentials(rec.id)
        was_waiting = rec.inRoom
        rec = await self.get(session_id)
        log.info("session ended", extra={"session_id": rec.id, "reason": reason.value, "detail": detail})
        if was_waiting:
            await self.room.leave(rec.id)
        if rec.upstreamId and reason not in _UPSTREAM_ENDS:
            await self.cancel_upstream(rec.id, rec.upstreamId)
        elif rec.upstreamId or (task is None and rec.createSentAt is None):
            # terminal upstream, or nothing was ever sent: the slot is free (a create in flight
            # here frees it when it lands and is cancelled; one elsewhere, the sweep)
            await self.free_slot(rec.id)
        await self.bus.publish(rec.id, ended_message(reason))
        self._notify("session_ended", rec)
        return rec

    # --- observers (webhooks, conversations, metrics ...) -------------------------------
    def observe(self, observer: SessionObserver) -> None:
        """``observer`` hears each session start (credentials handed over: RUNNING) and end, once,
        on the instance that made the change, on a task of its own (it never delays the session)."""
        self._observers.append(observer)

    def _notify(self, event: str, rec: SessionRecord) -> None:
        for observer in self._observers:
            self.tasks.track(_observed(getattr(observer, event), rec, event))

    async def cancel_upstream(self, session_id: str, upstream_id: str) -> bool:
        """Cancel upstream (a failure arms a ``cancel`` retry timer); True once done (``sessions.cancels``)."""
        return await self.cancels.cancel(session_id, upstream_id)

    async def end_for_upstream(
        self, rec: SessionRecord, status: RealtimeStatus, *, duration: int | None, failure: str | None
    ) -> None:
        """End ``rec`` because its upstream session reached the terminal ``status``."""
        reason = upstream_end_reason(rec, status, time.time())
        await self.end(rec.id, reason, failure, upstreamStatus=status.value, upstreamDuration=duration)

    async def end_sessions_of_avatar(self, avatar_id: str) -> int:
        """End (reason ``admin``) every session not ENDED that uses this custom avatar (it was deleted)."""
        ended = 0
        for rec in await self.store.get_many(await self.store.active_ids()):
            avatar = rec.avatar or {}
            if (rec.status is not SessionStatus.ENDED and avatar.get("type") == "custom"
                    and str(avatar.get("avatarId", "")).lower() == avatar_id):
                await self.end(rec.id, EndReason.ADMIN, "the avatar was deleted")
                ended += 1
        return ended

    # --- client presence --------------------------------------------------------------
    async def client_connected(self, session_id: str) -> None:
        await self.store.remove_timers(TimerKind.ABANDON.of(session_id))

    async def client_gone(self, session_id: str) -> None:
        rec = await self.store.get(session_id)
        if rec is not None and rec.status is not SessionStatus.ENDED:
            await self.store.add_timer(TimerKind.ABANDON.of(session_id), time.time() + self.config.abandon_grace)

    async def publish_status(self, rec: SessionRecord) -> None:
        await self.bus.publish(rec.id, await self.status_frame(rec))

    async def status_frame(self, rec: SessionRecord) -> dict[str, Any]:
        """The ``status`` frame of ``rec``; while it waits in the room, with its place and ETA."""
        if rec.inRoom and rec.status is SessionStatus.PROVISIONING:
            waiting = await self.room.waiting(rec.id)
            if waiting is not None:
                return waiting_message(*waiting)
        return status_message(rec)

    # --- recovery and shutdown -------------------------------------------------------
    async def recover(self) -> int:
        """Take over what a dead instance left: slots, the waiting room, unheld provisioning (``sessions.recovery``)."""
        return await self.recovery.recover()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        held = [*self.provisioner.poller.watches, *self.tasks.stepping()]
        await self.provisioner.close()
        await self.tasks.cancel_steps()
        await self.tasks.drain_cleanups(timeout=10)
        with contextlib.suppress(Exception):  # another instance (or the next start) resumes them at once
            await asyncio.wait_for(self.store.release_leases(held, self.instance_id), 2)
        await self.reconciler.close()  # after the creates above: what is still out is left to the next instance


_UPSTREAM_ENDS = frozenset(UPSTREAM_END_REASONS.values())  # ends the upstream made: nothing to cancel there


async def _observed(call: Callable[[SessionRecord], Awaitable[None]], rec: SessionRecord, event: str) -> None:
    try:
        await call(rec)
    except Exception:
        log.exception("a session observer failed on %s", event, extra={"session_id": rec.id})
