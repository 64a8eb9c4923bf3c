"""The deadline loop: fires the Redis timers of every session, on whichever instance is alive.

Timers are members of one sorted set (``<kind>:<session id>[:<arg>]`` scored by due time).
A due timer is *claimed* by pushing its score 30 s ahead in the same Lua call that reads
it, so exactly one instance handles it, and if that instance dies mid-way the timer comes
due again. It is removed only once handled. The loop ticks every 100 ms, so a cap fires
within ~0.1 s of ``endsAt`` and the upstream DELETE follows at once.

| kind       | fires                               | does                                       |
|------------|-------------------------------------|--------------------------------------------|
| provision  | provision_timeout after create      | end ``provision_timeout``                  |
| ready      | ready_timeout after READY           | end ``ready_timeout``                      |
| cap        | at ``endsAt``                        | end ``cap``                                |
| warn30/10  | 30 s / 10 s before ``endsAt``        | ``warning`` to the client                  |
| abandon    | grace after the client socket left  | end ``abandoned``                          |
| check      | every N s while RUNNING             | upstream status; end ``upstream_*`` if over |
| cancel     | after a failed upstream cancel      | retry the cancel (backoff, up to 1 day)    |
| sweep      | every lease (15 s)                         | resume orphaned provisioning (dead leases) |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..errors import AvatarServerError, NotFound
from ..models.sessions import EndReason, SessionStatus
from ..store.health import store_unavailable
from ..upstream.wire import UpstreamStatus
from .service import SessionService, timer

log = logging.getLogger("avatar_server.timers")

TICK = 0.1
CLAIM_LEASE = 30.0
SWEEP_EVERY = 15.0

_END_KINDS = {
    "provision": (EndReason.PROVISION_TIMEOUT, {SessionStatus.PROVISIONING}),
    "ready": (EndReason.READY_TIMEOUT, {SessionStatus.READY}),
    "cap": (EndReason.CAP, {SessionStatus.RUNNING}),
    "abandon": (EndReason.ABANDONED, {SessionStatus.PROVISIONING, SessionStatus.READY, SessionStatus.RUNNING}),
}


class TimerLoop:
    def __init__(self, service: SessionService) -> None:
        self.svc = service
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._next_sweep = 0.0
        self.fired = 0

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("timer loop already started")
        self._task = asyncio.create_task(self._run(), name="session-timers")

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if store_unavailable(exc) is None:
                    log.exception("timer tick failed")
                    await asyncio.sleep(1.0)
                # else Redis is away (said once, by store.health): try again next tick, so every
                # deadline that fell due meanwhile fires as soon as it is back
            await asyncio.sleep(TICK)

    async def tick(self) -> None:
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + min(SWEEP_EVERY, self.svc.config.lease_seconds)
            await self.svc.recover()
        members = await self.svc.store.claim_due_timers(now, CLAIM_LEASE)
        if members:
            await asyncio.gather(*(self._fire(m, now + CLAIM_LEASE) for m in members))

    async def _fire(self, member: str, claimed_until: float) -> None:
        kind, _, rest = member.partition(":")
        session_id, _, arg = rest.partition(":")
        try:
            await self._handle(kind, session_id, arg)
        except NotFound:
            pass
        except AvatarServerError as exc:
            log.warning("timer %s failed: %s", kind, exc.code, extra={"session_id": session_id})
            return  # stays claimed: it comes due again after the claim lease
        self.fired += 1
        await self.svc.store.finish_timer(member, claimed_until)

    async def _handle(self, kind: str, session_id: str, arg: str) -> None:
        svc = self.svc
        if kind in _END_KINDS:
            reason, statuses = _END_KINDS[kind]
            rec = await svc.get(session_id)
            if rec.status in statuses:
                await svc.end(session_id, reason)
        elif kind in ("warn30", "warn10"):
            rec = await svc.get(session_id)
            if rec.status is SessionStatus.RUNNING and rec.endsAt:
                remaining = max(0, round(rec.endsAt - time.time()))
                await svc.bus.publish(session_id, {"type": "warning", "remainingSeconds": remaining})
        elif kind == "check":
            await self._check(session_id)
        elif kind == "cancel":
            await self._retry_cancel(session_id, arg)
        else:
            log.warning("unknown timer kind %r", kind)

    async def _check(self, session_id: str) -> None:
        svc = self.svc
        rec = await svc.get(session_id)
        if rec.status is not SessionStatus.RUNNING or not rec.upstreamId:
            return
        try:
            state = await svc.upstream.get_session(rec.upstreamId)
        except NotFound:
            await svc.end(session_id, EndReason.UPSTREAM_CANCELLED, "the upstream session disappeared")
            return
        except AvatarServerError:
            state = None
        if state is not None and state.status in (
            UpstreamStatus.COMPLETED, UpstreamStatus.FAILED, UpstreamStatus.CANCELLED
        ):
            await svc.end_for_upstream(rec, state.status.value, duration=state.duration, failure=state.failure)
            return
        if state is not None and state.status.value != rec.upstreamStatus:
            await svc.store.set_fields(session_id, {"upstreamStatus": state.status.value})
        await svc.store.add_timer(timer("check", session_id), time.time() + svc.config.upstream_check_interval)

    async def _retry_cancel(self, session_id: str, upstream_id: str) -> None:
        if not upstream_id:
            return
        ok = await self.svc.cancel_upstream(session_id, upstream_id)
        if ok:
            log.info("upstream cancel succeeded on retry", extra={"session_id": session_id})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
