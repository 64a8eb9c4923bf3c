"""The deadline loop: fires the Redis timers of every session, on whichever instance is alive.

Timers are members of one sorted set (``<kind>:<session id>[:<arg>]`` scored by due time;
names built and parsed by ``sessions.timer_names``).
A due timer is *claimed* by pushing its score 30 s ahead in the same Lua call that reads
it, so exactly one instance handles it, and if that instance dies mid-way the timer comes
due again. It is removed only once handled. The loop ticks every 100 ms, so a cap fires
within ~0.1 s of ``endsAt`` and the upstream DELETE follows at once.

No deadline waits for another session's upstream call: the loop only claims. Each claimed
timer is handled on its own task (owned by the loop, cancelled in ``close()``), bounded by
``HANDLER_TIMEOUT`` (shorter than the claim, so a timer is never handled twice at once; one
cut short comes due again when its claim runs out). ``check`` handlers — the only ones that
read upstream status — also take one of ``MAX_CHECKS`` slots, so a stalled upstream holds at
most that many reads (and pooled connections) per instance, and the ends (``provision``,
``ready``, ``cap``, ``abandon``), warnings and cancel retries never queue behind them. A
claim takes at most ``CLAIM_LIMIT`` timers, earliest due first; one that comes back full is
followed at once by another, so a backlog drains within a tick.
A handler that meets a Redis outage tries again every ``STORE_RETRY`` s while it holds its claim,
so a deadline claimed the instant Redis went away fires as soon as Redis is back.

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
from typing import Any, Protocol

from ..errors import AvatarServerError, NotFound
from ..models.sessions import EndReason, SessionRecord, SessionStatus, sources_of
from ..models.signal import warning_message
from ..runway import RealtimeStatus
from ..store.events import EventBus
from ..store.health import store_unavailable
from ..store.sessions import SessionStore
from ..upstream import UpstreamClient
from .lifecycle import LifecycleConfig
from .timer_names import TimerKind, parse_timer

log = logging.getLogger("avatar_server.timers")

TICK = 0.1
CLAIM_LEASE = 30.0
CLAIM_LIMIT = 100  # timers per claim; a full claim is followed at once by another
HANDLER_TIMEOUT = 25.0  # < CLAIM_LEASE: a handler still running when its claim runs out is gone by then
MAX_CHECKS = 16  # upstream status reads for `check` timers in flight at once, per instance
STORE_RETRY = 0.25  # s: a handler that met a Redis outage tries again this often, within its claim
CLOSE_GRACE = 2.0  # seconds close() lets in-flight ends finish before cancelling them
SWEEP_EVERY = 15.0

# the deadlines: (the end reason, the statuses in which it still applies)
_END_KINDS: dict[TimerKind, tuple[EndReason, frozenset[SessionStatus]]] = {
    TimerKind.PROVISION: (EndReason.PROVISION_TIMEOUT, frozenset({SessionStatus.PROVISIONING})),
    TimerKind.READY: (EndReason.READY_TIMEOUT, frozenset({SessionStatus.READY})),
    TimerKind.CAP: (EndReason.CAP, frozenset({SessionStatus.RUNNING})),
    TimerKind.ABANDON: (EndReason.ABANDONED, sources_of(SessionStatus.ENDED)),
}
_WARNINGS = frozenset({TimerKind.WARN30, TimerKind.WARN10})


class TimerOwner(Protocol):
    """What the loop asks of the session service (``SessionService`` is one)."""

    store: SessionStore
    bus: EventBus
    upstream: UpstreamClient
    config: LifecycleConfig

    async def get(self, session_id: str) -> SessionRecord: ...
    async def end(self, session_id: str, reason: EndReason, detail: str | None = None, **fields: Any) -> Any: ...
    async def end_for_upstream(self, rec: SessionRecord, status: RealtimeStatus, *, duration: int | None,
                               failure: str | None) -> None: ...
    async def cancel_upstream(self, session_id: str, upstream_id: str) -> bool: ...
    async def recover(self) -> int: ...


class TimerLoop:
    def __init__(self, service: TimerOwner) -> None:
        self.svc = service
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._next_sweep = 0.0
        self._sweep: asyncio.Task[int] | None = None
        self._handlers: set[asyncio.Task[None]] = set()  # one per claimed timer being handled
        self._checks: set[asyncio.Task[None]] = set()  # those of them that are `check`s
        self._check_slots = asyncio.Semaphore(MAX_CHECKS)

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
        if now >= self._next_sweep and (self._sweep is None or self._sweep.done()):
            self._next_sweep = now + min(SWEEP_EVERY, self.svc.config.lease_seconds)
            # on its own task: however long the sweep takes, the claims below go on every tick
            self._sweep = asyncio.create_task(self.svc.recover(), name="session-sweep")
        await self.claim_due()
        self._raise_sweep_failure()

    def _raise_sweep_failure(self) -> None:
        """A finished sweep's exception is raised from the tick (after its claims), as when it ran inline."""
        sweep = self._sweep
        if sweep is not None and sweep.done():
            self._sweep = None
            if not sweep.cancelled() and (exc := sweep.exception()) is not None:
                raise exc

    async def claim_due(self) -> int:
        """Claim every due timer and start its handler; never waits for a handler. Returns how many."""
        claimed = 0
        while not self._closed:
            now = time.time()
            members = await self.svc.store.claim_due_timers(now, CLAIM_LEASE, CLAIM_LIMIT)
            for member in members:
                self._start(member, now + CLAIM_LEASE)
            claimed += len(members)
            if len(members) < CLAIM_LIMIT:
                break  # nothing more is due; a full claim may have left some: claim again at once
        return claimed

    def _start(self, member: str, claimed_until: float) -> None:
        if self._closed:
            return  # stays claimed: another instance (or this one after a restart) fires it
        task = asyncio.create_task(self._fire(member, claimed_until), name=f"timer-{member}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if parse_timer(member)[0] is TimerKind.CHECK:
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _fire(self, member: str, claimed_until: float) -> None:
        known, session_id, arg = parse_timer(member)
        kind = known or member.partition(":")[0]  # a kind this version does not know: logged, then done
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT):
                if kind is TimerKind.CHECK:
                    async with self._check_slots:  # only checks wait for these: ends never do
                        await self._handle_while_claimed(kind, session_id, arg)
                else:
                    await self._handle_while_claimed(kind, session_id, arg)
        except NotFound:
            pass
        except AvatarServerError as exc:
            log.warning("timer %s failed: %s", kind, exc.code, extra={"session_id": session_id})
            return  # stays claimed: it comes due again after the claim lease
        except TimeoutError:
            log.warning("timer %s not handled within %.0f s; it comes due again", kind, HANDLER_TIMEOUT,
                        extra={"session_id": session_id})
            return
        except Exception:
            log.exception("timer %s failed", kind, extra={"session_id": session_id})
            return
        try:
            await self.svc.store.finish_timer(member, claimed_until)
        except Exception as exc:  # Redis away: it comes due again after the claim lease, and is a no-op then
            log.warning("timer %s could not be marked done: %s", kind, type(exc).__name__,
                        extra={"session_id": session_id})

    async def _handle_while_claimed(self, kind: TimerKind | str, session_id: str, arg: str) -> None:
        """Handle the timer; while Redis does not answer, try again every ``STORE_RETRY`` s (within the
        handler's time, so within the claim): a timer claimed the instant Redis went away fires as
        soon as it is back, not a whole claim lease later."""
        while True:
            try:
                return await self._handle(kind, session_id, arg)
            except Exception as exc:
                if self._closed or store_unavailable(exc) is None:
                    raise
            await asyncio.sleep(STORE_RETRY)

    async def _handle(self, kind: TimerKind | str, session_id: str, arg: str) -> None:
        svc = self.svc
        if kind in _END_KINDS:
            reason, statuses = _END_KINDS[kind]
            rec = await svc.get(session_id)
            if rec.status in statuses:
                await svc.end(session_id, reason)
        elif kind in _WARNINGS:
            rec = await svc.get(session_id)
            if rec.status is SessionStatus.RUNNING and rec.endsAt:
                remaining = max(0, round(rec.endsAt - time.time()))
                await svc.bus.publish(session_id, warning_message(remaining))
        elif kind is TimerKind.CHECK:
            await self._check(session_id)
        elif kind is TimerKind.CANCEL:
            await self._retry_cancel(session_id, arg)
        else:
            log.warning("unknown timer kind %r", kind)

    async def _check(self, session_id: str) -> None:
        svc = self.svc
        rec = await svc.get(session_id)
        if rec.status is not SessionStatus.RUNNING or not rec.upstreamId:
            return
        try:
            state = await svc.upstream.get_session(rec.upstreamId, op="check")
        except NotFound:
            await svc.end(session_id, EndReason.UPSTREAM_CANCELLED, "the upstream session disappeared")
            return
        except AvatarServerError:
            state = None
        if state is not None and state.status.is_terminal:
            await svc.end_for_upstream(rec, state.status, duration=state.duration, failure=state.failure)
            return
        if state is not None and state.status.value != rec.upstreamStatus:
            await svc.store.set_fields(session_id, {"upstreamStatus": state.status.value})
        await svc.store.add_timer(TimerKind.CHECK.of(session_id), time.time() + svc.config.upstream_check_interval)

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
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweep
        # status checks are only reads: cut them now; ends get a moment to finish their upstream
        # cancel (one cut short arms a `cancel` retry timer, see SessionService.cancel_upstream)
        for task in list(self._checks):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=CLOSE_GRACE)
        pending = list(self._handlers)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_GRACE)
