"""Provisioning one session: create upstream, poll until READY, consume exactly once.

Runs as a task owned by ``SessionService`` while this instance holds the session's
lease in Redis (renewed as it polls). If the instance dies, the lease expires and
another instance (or this one after a restart) resumes polling; the ``provision``
timer ends the session regardless if READY never comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import AvatarServerError, NotFound, UpstreamAmbiguous
from ..models.sessions import Credentials, EndReason, SessionRecord, SessionStatus
from ..store.sessions import TransitionRefused
from ..upstream.wire import UpstreamStatus
from .polling import MIN_SAMPLES, PollPlan

if TYPE_CHECKING:
    from .service import SessionService

log = logging.getLogger("avatar_server.provisioner")

SAMPLES_TTL = 10.0  # seconds a process reuses the learned samples before re-reading them
SAMPLES_KEEP = 200


def upstream_body(rec: SessionRecord) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gwm1_avatars", "avatar": rec.avatar, "maxDuration": rec.maxDuration}
    if rec.personality:
        body["personality"] = rec.personality
    if rec.startScript:
        body["startScript"] = rec.startScript
    if rec.tools:
        body["tools"] = rec.tools
    return body


class Provisioner:
    def __init__(self, service: SessionService) -> None:
        self.svc = service
        self._samples: list[float] = []
        self._samples_at = 0.0

    async def plan(self) -> PollPlan:
        stale = time.monotonic() - self._samples_at > SAMPLES_TTL
        if stale or len(self._samples) < MIN_SAMPLES:
            self._samples = await self.svc.store.provision_samples()
            self._samples_at = time.monotonic()
        return PollPlan.learn(self._samples)

    async def learn(self, seconds: float) -> None:
        """Record a provisioning time (shared in Redis; this process's copy updated at once)."""
        await self.svc.store.add_provision_sample(seconds)
        self._samples = [seconds, *self._samples][:SAMPLES_KEEP]

    async def run(self, rec: SessionRecord) -> None:
        svc = self.svc
        try:
            await self._run(rec)
        except asyncio.CancelledError:
            raise
        except AvatarServerError as exc:
            log.warning("provisioning failed", extra={"session_id": rec.id, "error": exc.code})
            await svc.end(rec.id, EndReason.ERROR, exc.message)
        except Exception:
            log.exception("provisioning crashed", extra={"session_id": rec.id})
            await svc.end(rec.id, EndReason.ERROR, "internal error while provisioning")
        finally:
            await svc.store.release_lease(rec.id, svc.instance_id)

    async def _run(self, rec: SessionRecord) -> None:
        svc = self.svc
        upstream_id = rec.upstreamId
        if upstream_id is None:
            try:
                upstream_id = await self._create(rec)
            except UpstreamAmbiguous as exc:
                # reconcile: a unique unowned match is adopted (its id stored), the rest cancelled
                adopted = await svc.reconciler.after_ambiguous(rec)
                if adopted is None:
                    await svc.end(rec.id, EndReason.ERROR, exc.message)
                    return
                upstream_id = adopted
            current = await svc.store.get(rec.id)
            if current is None or current.status is SessionStatus.ENDED:
                # ended while the create was in flight: the upstream session must not live on
                await svc.cancel_upstream(rec.id, upstream_id)
                return
            rec = current
        ready = await self._poll_until_ready(rec, upstream_id)
        if ready is None:
            return
        session_key, provisioned = ready
        if not await svc.store.claim_consume(rec.id):
            log.warning("credentials already consumed elsewhere", extra={"session_id": rec.id})
            return
        result = await svc.upstream.consume(upstream_id, session_key)
        creds = Credentials.from_consume(result.url, result.token, result.roomName)
        cfg = svc.config
        await svc.store.put_credentials(rec.id, creds, cfg.ready_timeout + cfg.cap_seconds + 600)
        now = time.time()
        try:
            await svc.store.transition(
                rec,
                [SessionStatus.PROVISIONING],
                SessionStatus.READY,
                {"readyAt": now, "queued": False},
                remove_timers=[f"provision:{rec.id}"],
                add_timers=[(f"ready:{rec.id}", now + cfg.ready_timeout)],
            )
        except TransitionRefused:
            await svc.store.drop_credentials(rec.id)
            await svc.cancel_upstream(rec.id, upstream_id)
            return
        await self.learn(provisioned)
        rec = await svc.get(rec.id)
        log.info("session ready", extra={"session_id": rec.id, "provision_seconds": round(provisioned, 3)})
        await svc.publish_status(rec)

    async def _create(self, rec: SessionRecord) -> str:
        """Create upstream. If this task is cancelled meanwhile (the session ended), the create
        still completes in a task the service owns, and its result is cancelled upstream."""
        svc = self.svc
        create = asyncio.ensure_future(self._create_and_record(rec))
        try:
            return await asyncio.shield(create)
        except asyncio.CancelledError:
            svc.track(self._cancel_when_created(rec.id, create))
            raise

    async def _create_and_record(self, rec: SessionRecord) -> str:
        # journalled first; crossed out once the id is stored (see sessions.reconcile)
        async with self.svc.reconciler.journal_create(rec):
            upstream_id = await self.svc.upstream.create_session(upstream_body(rec))
            await self.svc.store.set_fields(rec.id, {"upstreamId": upstream_id})
        return upstream_id

    async def _cancel_when_created(self, session_id: str, create: asyncio.Future[str]) -> None:
        try:
            upstream_id = await create
        except AvatarServerError:
            return
        await self.svc.cancel_upstream(session_id, upstream_id)

    async def _poll_until_ready(self, rec: SessionRecord, upstream_id: str) -> tuple[str, float] | None:
        """Poll until READY; returns (sessionKey, seconds from dequeue to READY), or None if it ended."""
        svc = self.svc
        plan = await self.plan()
        started = time.monotonic()
        queued = rec.queued
        after_window = 0
        last_renew = time.monotonic()
        while True:
            try:
                state = await svc.upstream.get_session(upstream_id)
            except NotFound:
                await svc.end(rec.id, EndReason.UPSTREAM_CANCELLED, "the upstream session disappeared")
                return None
            except AvatarServerError as exc:
                # retries are exhausted for this poll; keep trying until the provision deadline ends us
                log.warning("poll failed; retrying", extra={"session_id": rec.id, "error": exc.code})
                await asyncio.sleep(1.0)
                continue
            if state.status is UpstreamStatus.READY and state.sessionKey:
                return state.sessionKey, time.monotonic() - started
            if state.status is not UpstreamStatus.NOT_READY:
                if state.status is UpstreamStatus.RUNNING:
                    await svc.end(rec.id, EndReason.ERROR, "the upstream session was consumed by someone else")
                else:
                    await svc.end_for_upstream(
                        rec, state.status.value, duration=state.duration, failure=state.failure
                    )
                return None
            now_queued = bool(state.queued)
            if now_queued != queued:
                queued = now_queued
                if not queued:
                    started = time.monotonic()  # learned times count from dequeue
                await svc.store.set_fields(rec.id, {"queued": queued})
                fresh = await svc.store.get(rec.id)
                if fresh is not None:
                    await svc.publish_status(fresh)
            elapsed = time.monotonic() - started
            delay = plan.next_delay(elapsed, queued=queued, after_window_polls=after_window)
            if not queued and elapsed > plan.window_end:
                after_window += 1
            if time.monotonic() - last_renew > svc.config.lease_seconds / 3:
                if not await svc.store.renew_lease(rec.id, svc.instance_id, svc.config.lease_seconds):
                    log.warning("lost the provisioning lease", extra={"session_id": rec.id})
                    return None
                last_renew = time.monotonic()
            await asyncio.sleep(delay)
