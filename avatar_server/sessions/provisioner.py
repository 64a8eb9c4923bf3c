"""Provisioning: create upstream, watch until READY, consume exactly once.

A session's provisioning is a few short steps, not a task that lives for its whole wait:

1. **create** — a task that sends ``POST /v1/realtime_sessions`` (once its upstream slot is
   held: see ``sessions.room``) and records the upstream id;
2. **watch** — the instance's ``PollScheduler`` polls it within the request budget
   (``sessions.poller``); ``on_answer`` here decides what each answer means;
3. **finish** — on READY, a task consumes the credentials (once, guarded in Redis) and moves
   the session to READY.

The instance holds the session's lease in Redis meanwhile (the scheduler renews it). If the
instance dies, the lease expires and another instance (or this one after a restart) resumes
the watch; the ``provision`` timer ends the session regardless if READY never comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from ..errors import AvatarServerError, NotFound, UpstreamAmbiguous
from ..models.sessions import Credentials, EndReason, SessionRecord, SessionStatus
from ..runway import RealtimeStatus
from ..store.sessions import SessionStore, TransitionRefused
from ..upstream import UpstreamClient
from ..upstream.budget import RequestBudget
from ..upstream.wire import UpstreamSession
from .lifecycle import LifecycleConfig
from .poller import PollScheduler, Watch
from .reconcile import CreateReconciler
from .room import WaitingRoom
from .tasks import SessionTasks
from .timer_names import TimerKind

log = logging.getLogger("avatar_server.provisioner")


SERVER_TOOL_FIELDS = frozenset({"url", "timeoutSeconds"})


def upstream_body(rec: SessionRecord) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gwm1_avatars", "avatar": rec.avatar, "maxDuration": rec.maxDuration}
    if rec.personality:
        body["personality"] = rec.personality
    if rec.startScript:
        body["startScript"] = rec.startScript
    if rec.tools:
        # a site's backend_rpc tools carry our own url and timeoutSeconds: never sent upstream
        body["tools"] = [{k: v for k, v in t.items() if k not in SERVER_TOOL_FIELDS} for t in rec.tools]
    return body


class ProvisionerOwner(Protocol):
    """What the provisioner asks of the session service (``SessionService`` is one)."""

    async def get(self, session_id: str) -> SessionRecord: ...
    async def end(self, session_id: str, reason: EndReason, detail: str | None = None, **fields: Any) -> Any: ...
    async def end_for_upstream(self, rec: SessionRecord, status: RealtimeStatus, *, duration: int | None,
                               failure: str | None) -> None: ...
    async def free_slot(self, session_id: str) -> None: ...
    async def start_granted(self, session_ids: list[str]) -> None: ...
    async def cancel_upstream(self, session_id: str, upstream_id: str) -> bool: ...
    async def publish_status(self, rec: SessionRecord) -> None: ...


class Provisioner:
    def __init__(
        self,
        *,
        sessions: ProvisionerOwner,
        store: SessionStore,
        upstream: UpstreamClient,
        budget: RequestBudget | None,
        room: WaitingRoom,
        reconciler: CreateReconciler,
        tasks: SessionTasks,
        config: LifecycleConfig,
        instance_id: str,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.upstream = upstream
        self.room = room
        self.reconciler = reconciler
        self.tasks = tasks
        self.config = config
        self.instance_id = instance_id
        self.poller = PollScheduler(
            upstream=upstream,
            store=store,
            budget=budget,
            instance_id=instance_id,
            lease_seconds=config.lease_seconds,
            on_answer=self.on_answer,
            also_held=tasks.stepping,
        )

    def start(self, rec: SessionRecord) -> None:
        """Provision ``rec`` (this instance holds its lease): create it, or resume its watch."""
        if rec.upstreamId is not None:
            self.poller.watch(rec, rec.upstreamId)
        else:
            self.tasks.spawn(rec.id, self._guarded(rec, self._create_then_watch(rec)))

    async def _guarded(self, rec: SessionRecord, step: Any) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except AvatarServerError as exc:
            log.warning("provisioning failed", extra={"session_id": rec.id, "error": exc.code})
            await self.sessions.end(rec.id, EndReason.ERROR, exc.message)
        except Exception:
            log.exception("provisioning crashed", extra={"session_id": rec.id})
            await self.sessions.end(rec.id, EndReason.ERROR, "internal error while provisioning")

    # --- 1. create ---------------------------------------------------------------------
    async def _create_then_watch(self, rec: SessionRecord) -> None:
        svc = self.sessions
        current = await self.store.get(rec.id)
        if current is None or current.status is SessionStatus.ENDED:
            await svc.free_slot(rec.id)  # ended before its create left: nothing exists upstream
            return
        try:
            upstream_id = await self._create(current)
        except UpstreamAmbiguous as exc:
            # reconcile: a unique unowned match is adopted (its id stored), the rest cancelled
            adopted = await self.reconciler.after_ambiguous(current)
            if adopted is None:
                await svc.end(rec.id, EndReason.ERROR, exc.message)
                return
            upstream_id = adopted
        except AvatarServerError:
            await svc.free_slot(rec.id)  # refused upstream: nothing was created
            raise
        current = await self.store.get(rec.id)
        if current is None or current.status is SessionStatus.ENDED:
            # ended while the create was in flight: the upstream session must not live on
            await svc.cancel_upstream(rec.id, upstream_id)
            return
        self.poller.watch(current, upstream_id)

    async def _create(self, rec: SessionRecord) -> str:
        """Create upstream. If this task is cancelled meanwhile (the session ended), the create
        still completes in a task the service owns, and its result is cancelled upstream."""
        create = asyncio.ensure_future(self._create_and_record(rec))
        try:
            return await asyncio.shield(create)
        except asyncio.CancelledError:
            self.tasks.track(self._cancel_when_created(rec.id, create))
            raise

    async def _create_and_record(self, rec: SessionRecord) -> str:
        await self.store.set_fields(rec.id, {"createSentAt": time.time()})
        # journalled first; crossed out once the id is stored (see sessions.reconcile)
        async with self.reconciler.journal_create(rec):
            upstream_id = await self.upstream.create_session(upstream_body(rec))
            await self.store.set_fields(rec.id, {"upstreamId": upstream_id})
        return upstream_id

    async def _cancel_when_created(self, session_id: str, create: asyncio.Future[str]) -> None:
        try:
            upstream_id = await create
        except AvatarServerError:
            await self.sessions.free_slot(session_id)
            return
        await self.sessions.cancel_upstream(session_id, upstream_id)

    # --- 2. watch ----------------------------------------------------------------------
    async def on_answer(self, w: Watch, answer: UpstreamSession | AvatarServerError) -> bool:
        """One poll's answer for ``w``: True to keep watching."""
        svc = self.sessions
        rec = w.record
        if isinstance(answer, NotFound):
            await svc.end(rec.id, EndReason.UPSTREAM_CANCELLED, "the upstream session disappeared")
            return False
        if isinstance(answer, AvatarServerError):
            # retries are exhausted for this poll; keep trying until the provision deadline ends us
            log.warning("poll failed; retrying", extra={"session_id": rec.id, "error": answer.code})
            return True
        state = answer
        if not w.seen_running and (state.status is RealtimeStatus.READY
                                   or (state.status is RealtimeStatus.NOT_READY and not state.queued)):
            w.seen_running = True  # it holds one of the upstream's slots: counts when the limit is learned
            await self.sessions.start_granted(await self.room.upstream_running(rec.id))
        if state.status is RealtimeStatus.READY and state.sessionKey:
            provisioned = time.monotonic() - w.started
            self.tasks.spawn(rec.id, self._guarded(rec, self._finish(rec, w.upstream_id, state.sessionKey, provisioned)))
            return False
        if state.status is RealtimeStatus.READY:  # READY without its session key: nothing to consume
            await svc.end(rec.id, EndReason.ERROR, "the upstream answered READY without a session key")
            return False
        if state.status is not RealtimeStatus.NOT_READY:
            if state.status is RealtimeStatus.RUNNING:
                await svc.end(rec.id, EndReason.ERROR, "the upstream session was consumed by someone else")
            else:
                await svc.end_for_upstream(rec, state.status, duration=state.duration, failure=state.failure)
            return False
        queued = bool(state.queued)
        if queued != w.queued:
            w.queued = queued
            if not queued:
                w.started = time.monotonic()  # learned times count from dequeue
                w.last_poll = 0.0
                w.after_window = 0
            else:
                await self.room.upstream_queued(rec.id)
            await self.store.set_fields(rec.id, {"queued": queued})
            fresh = await self.store.get(rec.id)
            if fresh is None or fresh.status is SessionStatus.ENDED:
                return False
            await svc.publish_status(fresh)
        return True

    # --- 3. finish ---------------------------------------------------------------------
    async def _finish(self, rec: SessionRecord, upstream_id: str, session_key: str, provisioned: float) -> None:
        svc, store, cfg = self.sessions, self.store, self.config
        if not await store.claim_consume(rec.id):
            log.warning("credentials already consumed elsewhere", extra={"session_id": rec.id})
            return
        result = await self.upstream.consume(upstream_id, session_key)
        creds = Credentials.from_consume(result.url, result.token, result.roomName)
        await store.put_credentials(rec.id, creds, cfg.ready_timeout + cfg.cap_seconds + 600)
        now = time.time()
        try:
            await store.transition(
                rec,
                [SessionStatus.PROVISIONING],
                SessionStatus.READY,
                {"readyAt": now, "queued": False},
                remove_timers=[TimerKind.PROVISION.of(rec.id)],
                add_timers=[(TimerKind.READY.of(rec.id), now + cfg.ready_timeout)],
            )
        except TransitionRefused:
            await store.drop_credentials(rec.id)
            await svc.cancel_upstream(rec.id, upstream_id)
            return
        finally:
            await store.release_lease(rec.id, self.instance_id)
        await self.poller.learn(provisioned)
        rec = await svc.get(rec.id)
        log.info("session ready", extra={"session_id": rec.id, "provision_seconds": round(provisioned, 3)})
        await svc.publish_status(rec)

    def drop(self, session_id: str) -> None:
        self.poller.drop(session_id)

    async def close(self) -> None:
        await self.poller.close()
