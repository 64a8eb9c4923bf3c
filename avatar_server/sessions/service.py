"""The session lifecycle service: create, provision (in the background), deliver, end.

State lives in Redis (``store.sessions``); this object owns only in-process work: the
provisioning tasks it started. Every end path goes through ``end()``, which moves the
record to ENDED atomically (removing its timers), cancels the upstream session, and
tells the client. Deadlines are Redis timers (``sessions.timers``), so a restarted or
surviving instance enforces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import (
    AvatarServerError,
    Conflict,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    ValidationFailed,
)
from ..models.sessions import (
    END_MESSAGES,
    Credentials,
    EndReason,
    SessionCreate,
    SessionRecord,
    SessionStatus,
    iso,
    sources_of,
)
from ..store.events import EventBus
from ..store.sessions import SessionStore, TransitionRefused
from ..upstream import UpstreamClient
from ..upstream.budget import RequestBudget
from .provisioner import Provisioner
from .reconcile import CreateReconciler
from .room import WaitingRoom, waiting_frame

log = logging.getLogger("avatar_server.sessions")

TIMER_KINDS = ("provision", "ready", "cap", "warn30", "warn10", "abandon", "check")
UPSTREAM_END_REASONS = {EndReason.UPSTREAM_COMPLETED, EndReason.UPSTREAM_FAILED, EndReason.UPSTREAM_CANCELLED}

CAP_SLACK = 2.0  # seconds: an upstream COMPLETED this close to endsAt is the cap



def timer(kind: str, session_id: str) -> str:
    return f"{kind}:{session_id}"


def all_timers(session_id: str) -> list[str]:
    return [timer(k, session_id) for k in TIMER_KINDS]


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig:
    cap_seconds: int
    provision_timeout: float
    ready_timeout: float
    abandon_grace: float
    upstream_check_interval: float
    lease_seconds: float = 15.0


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
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._observers: list[SessionObserver] = []
        self._closed = False
        self.provisioner = Provisioner(self)
        self.reconciler = CreateReconciler(self)  # journals creates, reconciles lost ones (own task)

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
            timers=[(timer("provision", record.id), record.createdAt + self.config.provision_timeout)],
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

    def spawn(self, session_id: str, step: Awaitable[None]) -> None:
        """Run one provisioning step (create, finish) as a task the service owns, by session."""
        task = asyncio.ensure_future(step)
        self._tasks[session_id] = task
        task.add_done_callback(lambda t, sid=session_id: self._tasks.pop(sid, None) if self._tasks.get(sid) is t else None)

    def stepping(self) -> list[str]:
        """Sessions with a provisioning step (create, finish) running on this instance."""
        return list(self._tasks)

    def track(self, coro: Awaitable[None]) -> None:
        """Run clean-up work (e.g. cancelling an upstream session) that must not be cut short."""
        task = asyncio.ensure_future(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    # --- read ------------------------------------------------------------------------
    async def get(self, session_id: str) -> SessionRecord:
        rec = await self.store.get(session_id)
        if rec is None:
            raise NotFound(f"no session {session_id}", code="session_not_found")
        return rec

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
            add = [(timer("cap", rec.id), ends), (timer("check", rec.id), now + self.config.upstream_check_interval)]
            for secs in (30, 10):
                if rec.maxDuration >= secs:
                    add.append((timer(f"warn{secs}", rec.id), ends - secs))
            try:
                await self.store.transition(
                    rec,
                    [SessionStatus.READY],
                    SessionStatus.RUNNING,
                    {"startedAt": now, "endsAt": ends},
                    remove_timers=[timer("ready", rec.id)],
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
                remove_timers=all_timers(rec.id),
            )
        except TransitionRefused:
            return await self.get(session_id)
        self.provisioner.drop(rec.id)
        task = self._tasks.get(rec.id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await self.store.drop_credentials(rec.id)
        was_waiting = rec.inRoom
        rec = await self.get(session_id)
        log.info("session ended", extra={"session_id": rec.id, "reason": reason.value, "detail": detail})
        if was_waiting:
            await self.room.leave(rec.id)
        if rec.upstreamId and reason not in UPSTREAM_END_REASONS:
            await self.cancel_upstream(rec.id, rec.upstreamId)
        elif rec.upstreamId or (task is None and rec.createSentAt is None):
            # terminal upstream, or nothing was ever sent: the slot is free (a create in flight
            # here frees it when it lands and is cancelled; one elsewhere, the sweep)
            await self.free_slot(rec.id)
        await self.bus.publish(rec.id, {"type": "ended", "reason": reason.value, "message": END_MESSAGES[reason]})
        self._notify("session_ended", rec)
        return rec

    # --- observers (webhooks, conversations, metrics ...) -------------------------------
    def observe(self, observer: SessionObserver) -> None:
        """``observer`` hears each session start (credentials handed over: RUNNING) and end, once,
        on the instance that made the change, on a task of its own (it never delays the session)."""
        self._observers.append(observer)

    def _notify(self, event: str, rec: SessionRecord) -> None:
        for observer in self._observers:
            self.track(_observed(getattr(observer, event), rec, event))

    async def cancel_upstream(self, session_id: str, upstream_id: str) -> bool:
        """Cancel upstream; on failure arm a ``cancel`` timer that retries until it succeeds.

        Returns once the DELETE is done: the status read that records the final upstream status
        and duration runs in the background (bounded), so a cancel never waits behind a slow read."""
        try:
            await self.upstream.cancel_session(upstream_id)
        except AvatarServerError as exc:
            log.warning(
                "upstream cancel failed; will retry",
                extra={"session_id": session_id, "upstream_id": upstream_id, "error": exc.code},
            )
            await self.store.add_timer(f"cancel:{session_id}:{upstream_id}", time.time() + 2.0)
            return False
        except asyncio.CancelledError:
            # cut short (a timer handler's time limit, shutdown): it may not have happened — retry it
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.add_timer(f"cancel:{session_id}:{upstream_id}", time.time() + 2.0))
            raise
        await self.free_slot(session_id)
        self.track(self._record_final_status(session_id, upstream_id))
        return True

    FINAL_READS = 4  # post-cancel status reads in flight at once: they never crowd out cancels
    FINAL_READ_TIMEOUT = 5.0
    _final_reads: asyncio.Semaphore | None = None

    async def _record_final_status(self, session_id: str, upstream_id: str) -> None:
        """Best effort: the upstream's status and billed duration after our cancel (dropped if slow)."""
        if self._final_reads is None:
            self._final_reads = asyncio.Semaphore(self.FINAL_READS)
        try:
            async with asyncio.timeout(self.FINAL_READ_TIMEOUT), self._final_reads:
                state = await self.upstream.get_session(upstream_id, op="check")
            await self.store.set_fields(
                session_id, {"upstreamStatus": state.status.value, "upstreamDuration": state.duration}
            )
        except (AvatarServerError, TimeoutError):
            pass
        except Exception as exc:  # e.g. Redis away: only a record detail is lost
            log.warning("final upstream status not recorded: %s", type(exc).__name__,
                        extra={"session_id": session_id, "upstream_id": upstream_id})

    async def end_for_upstream(self, rec: SessionRecord, status: str, *, duration: int | None, failure: str | None) -> None:
        reason = {
            "COMPLETED": EndReason.UPSTREAM_COMPLETED,
            "FAILED": EndReason.UPSTREAM_FAILED,
            "CANCELLED": EndReason.UPSTREAM_CANCELLED,
        }[status]
        if status == "COMPLETED" and rec.endsAt is not None and time.time() >= rec.endsAt - CAP_SLACK:
            # the upstream stopped at its own maxDuration, which is our cap (its clock may start at
            # consume, a moment before ours): this is the cap, reported as such
            reason = EndReason.CAP
        await self.end(rec.id, reason, failure, upstreamStatus=status, upstreamDuration=duration)

    # --- client presence --------------------------------------------------------------
    async def client_connected(self, session_id: str) -> None:
        await self.store.remove_timers(timer("abandon", session_id))

    async def client_gone(self, session_id: str) -> None:
        rec = await self.store.get(session_id)
        if rec is not None and rec.status is not SessionStatus.ENDED:
            await self.store.add_timer(timer("abandon", session_id), time.time() + self.config.abandon_grace)

    async def publish_status(self, rec: SessionRecord) -> None:
        await self.bus.publish(rec.id, await self.status_frame(rec))

    async def status_frame(self, rec: SessionRecord) -> dict[str, Any]:
        """The ``status`` frame of ``rec``; while it waits in the room, with its place and ETA."""
        if rec.inRoom and rec.status is SessionStatus.PROVISIONING:
            waiting = await self.room.waiting(rec.id)
            if waiting is not None:
                return waiting_frame(*waiting)
        return status_event(rec)

    async def public(self, rec: SessionRecord) -> dict[str, Any]:
        """The record as the API shows it (with its place in line while it waits)."""
        waiting = None
        if rec.inRoom and rec.status is SessionStatus.PROVISIONING:
            waiting = await self.room.waiting(rec.id)
        return rec.public(waiting)

    # --- recovery and shutdown -------------------------------------------------------
    async def recover(self) -> int:
        """Resume provisioning of PROVISIONING sessions that no live instance holds (after a restart),
        and serve the waiting room if slots are free (a slot freed by an instance that died)."""
        resumed = 0
        await self.sweep_slots()
        await self.start_granted(await self.room.grant())
        ids = [sid for sid in await self.store.active_ids()
               if sid not in self._tasks and sid not in self.provisioner.poller]
        orphans = []
        for i in range(0, len(ids), 200):  # records read in pipelines: one round trip per 200
            orphans += [r for r in await self.store.get_many(ids[i:i + 200])
                        if r.status is SessionStatus.PROVISIONING and not r.inRoom]
        for rec in orphans:
            sid = rec.id
            if await self.store.take_lease(sid, self.instance_id, self.config.lease_seconds):
                if rec.upstreamId is None and rec.createSentAt is not None:
                    # its create was in flight on an instance that died: it may exist upstream unseen
                    await self.end(sid, EndReason.ERROR, "the instance creating this session stopped")
                    self.reconciler.poke()  # find it upstream and cancel it (sessions.reconcile)
                    continue
                self.provisioner.start(rec)
                resumed += 1
        return resumed

    async def sweep_slots(self, older_than: float = 60.0) -> int:
        """Free the slots of sessions that ended (or were never stored) on an instance that died
        before it gave them back. Bounded by the slots held (the upstream concurrency)."""
        freed = 0
        cutoff = time.time() - older_than
        for sid, taken in await self.room.store.alive_since():
            if taken > cutoff or sid in self._tasks:
                continue
            rec = await self.store.get(sid)
            if rec is None:
                await self.free_slot(sid)
                freed += 1
            elif rec.status is SessionStatus.ENDED and (rec.endedAt or 0) < cutoff:
                if rec.upstreamId:
                    await self.cancel_upstream(sid, rec.upstreamId)  # idempotent; frees on success
                else:
                    await self.free_slot(sid)
                freed += 1
        return freed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        held = [*self.provisioner.poller.watches, *self._tasks]
        await self.provisioner.close()
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=10)
        with contextlib.suppress(Exception):  # another instance (or the next start) resumes them at once
            await asyncio.wait_for(self.store.release_leases(held, self.instance_id), 2)
        await self.reconciler.close()  # after the creates above: what is still out is left to the next instance


class SessionObserver(Protocol):
    async def session_started(self, rec: SessionRecord) -> None: ...
    async def session_ended(self, rec: SessionRecord) -> None: ...


async def _observed(call: Callable[[SessionRecord], Awaitable[None]], rec: SessionRecord, event: str) -> None:
    try:
        await call(rec)
    except Exception:
        log.exception("a session observer failed on %s", event, extra={"session_id": rec.id})


def status_event(rec: SessionRecord) -> dict[str, Any]:
    return {"type": "status", "status": rec.status.value, "queued": rec.queued, "endsAt": iso(rec.endsAt)}


def ended_error(rec: SessionRecord) -> AvatarServerError:
    reason = rec.endReason or EndReason.ERROR
    message = END_MESSAGES[reason]
    if reason is EndReason.PROVISION_TIMEOUT:
        return UpstreamTimeout(message, code="provision_timeout", sessionId=rec.id)
    if reason in (EndReason.UPSTREAM_FAILED, EndReason.ERROR):
        return UpstreamError(message, code=f"session_{reason.value}", sessionId=rec.id, detail=rec.endDetail)
    return Conflict(message, code="session_ended", sessionId=rec.id, reason=reason.value)
