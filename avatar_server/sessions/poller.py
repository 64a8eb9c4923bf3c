"""One poll scheduler per instance: every provisioning session it holds, polled by one task.

A session is *watched* from its upstream create until the upstream answers READY (or ends).
Each watch has a due time from its ``PollPlan`` (dense where READY is likely, sparse before,
backing off after; never more than 10 polls a second per session). Every tick the scheduler
takes the watches that are due and buys status-read tokens for them from the request budget
in one call (``RequestBudget.try_take``). When it gets all it asked for, every due session is
polled, as a task per session polled each on its own; latency is that of a dense loop. When
the budget is tight it gets fewer, and spends them where READY is most likely now: each
due session's *chance* that READY came since its last poll, from the learned provisioning
times (the empirical distribution F: ``(F(now) − F(last)) / (1 − F(last))``). The others
stay due, and their chance grows while they wait; a watch overdue by 5 s outranks any chance,
so none starves (a session the upstream queued, then dequeued, is still seen in time).

The scheduler also renews the provisioning leases of all its watches in one Redis call.
What a poll's answer means for the session is the provisioner's business (``on_answer``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import AvatarServerError
from ..models.sessions import SessionRecord
from ..store.sessions import SessionStore
from ..upstream import UpstreamClient
from ..upstream.budget import RequestBudget
from ..upstream.wire import UpstreamSession
from .polling import MIN_SAMPLES, PollPlan

log = logging.getLogger("avatar_server.poller")

TICK = 0.02  # seconds between scheduling rounds while something is due soon
IDLE_TICK = 0.25
SAMPLES_TTL = 10.0  # seconds a process reuses the learned samples before re-reading them
SAMPLES_KEEP = 200
FAILED_POLL_DELAY = 1.0
QUEUED_CHANCE = 0.01  # a session the upstream holds in its queue is rarely READY at the next poll
STARVE_AFTER = 5.0  # seconds overdue after which a watch outranks every chance (no watch starves)


@dataclass(eq=False)
class Watch:
    record: SessionRecord
    upstream_id: str
    started: float  # monotonic: provisioning clock (restarts when the upstream dequeues it)
    queued: bool
    seen_running: bool = False  # the upstream answered it as holding one of its slots (not queued)
    due: float = 0.0
    last_poll: float = 0.0  # seconds into provisioning at the last poll
    after_window: int = 0
    polling: bool = False
    dropped: bool = False

    @property
    def session_id(self) -> str:
        return self.record.id


# What the provisioner does with an answer: True keeps watching, False stops.
OnAnswer = Callable[[Watch, UpstreamSession | AvatarServerError], Awaitable[bool]]


class PollScheduler:
    def __init__(
        self,
        *,
        upstream: UpstreamClient,
        store: SessionStore,
        budget: RequestBudget | None,
        instance_id: str,
        lease_seconds: float,
        on_answer: OnAnswer,
        also_held: Callable[[], list[str]] = list,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.budget = budget
        self.instance_id = instance_id
        self.lease_seconds = lease_seconds
        self.on_answer = on_answer
        self.also_held = also_held  # sessions in a create or finish step: their leases are renewed too
        self.watches: dict[str, Watch] = {}
        self._heap: list[tuple[float, int, Watch]] = []
        self._backlog: list[Watch] = []  # due, not yet sent (tight budget)
        self._order = itertools.count()
        self._samples: list[float] = []
        self._samples_at = -SAMPLES_TTL
        self._plan = PollPlan.learn(())
        self._next_renew = 0.0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_failure_log = 0.0

    # --- membership ----------------------------------------------------------------------
    def watch(self, record: SessionRecord, upstream_id: str) -> None:
        if self._closed or record.id in self.watches:
            return
        now = time.monotonic()
        w = Watch(record=record, upstream_id=upstream_id, started=now, queued=record.queued, due=now)
        self.watches[record.id] = w
        self._push(w)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="poll-scheduler")
        self._wake.set()

    def drop(self, session_id: str) -> None:
        w = self.watches.pop(session_id, None)
        if w is not None:
            w.dropped = True

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.watches

    # --- learned provisioning times ------------------------------------------------------
    async def refresh_samples(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self._samples_at > SAMPLES_TTL or len(self._samples) < MIN_SAMPLES:
            self._samples = sorted(await self.store.provision_samples())
            self._samples_at = time.monotonic()
            self._plan = PollPlan.learn(self._samples)

    async def learn(self, seconds: float) -> None:
        """Record a provisioning time (shared in Redis; this process's copy updated at once)."""
        await self.store.add_provision_sample(seconds, keep=SAMPLES_KEEP)
        bisect.insort(self._samples, seconds)
        if len(self._samples) > SAMPLES_KEEP:
            self._samples.pop(0 if self._samples[0] != seconds else -1)
        self._plan = PollPlan.learn(self._samples)

    def chance(self, w: Watch, now: float) -> float:
        """The chance that ``w`` became READY since its last poll, given it was not READY then."""
        if w.queued:
            return QUEUED_CHANCE
        t0, t1 = w.last_poll, now - w.started
        s = self._samples
        if len(s) < MIN_SAMPLES:
            return max(0.0, t1 - t0) / 10.0
        n = len(s)
        f0 = bisect.bisect_right(s, t0) / n
        f1 = bisect.bisect_right(s, t1) / n
        if f0 >= 1.0:  # past every learned time: overdue, more so the longer it was not polled
            return min(1.0, max(0.0, t1 - t0) / max(t1, 1e-3))
        return (f1 - f0) / (1.0 - f0)

    def priority(self, w: Watch, now: float) -> float:
        """Who is polled first when the budget is tight: the chance of READY, plus an age term so
        that no watch starves — one overdue by ``STARVE_AFTER`` seconds outranks any chance (a
        session the upstream dequeued, or READY and waiting for its consume, must not expire)."""
        return self.chance(w, now) + max(0.0, now - w.due) / STARVE_AFTER

    # --- the loop ------------------------------------------------------------------------
    def _push(self, w: Watch) -> None:
        heapq.heappush(self._heap, (w.due, next(self._order), w))

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the budget down: the deadlines still end sessions
                now = time.monotonic()
                if now - self._last_failure_log > 30:
                    self._last_failure_log = now
                    log.warning("poll round failed (%s); retrying", type(exc).__name__, exc_info=True)
                await asyncio.sleep(0.5)
            if not self.watches:
                self._task = None
                return
            wait = IDLE_TICK if not self._backlog and not self._heap else TICK
            if self._heap and not self._backlog:
                wait = min(IDLE_TICK, max(TICK, self._heap[0][0] - time.monotonic()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _round(self) -> None:
        now = time.monotonic()
        if now >= self._next_renew:
            await self._renew_leases()
            await self.refresh_samples()
            self._next_renew = now + self.lease_seconds / 3
        due = [w for w in self._backlog if not w.dropped]
        self._backlog = []
        while self._heap and self._heap[0][0] <= now:
            _, _, w = heapq.heappop(self._heap)
            if not w.dropped and not w.polling:
                due.append(w)
        if not due:
            return
        granted = len(due)
        bought: float | None = None  # when this round's tokens were bought (None: no budget)
        if self.budget is not None:
            try:
                granted = await self.budget.try_take(len(due), "get")
            except BaseException:
                self._backlog = due
                raise
            bought = time.monotonic()
        if granted < len(due):
            due.sort(key=lambda w: self.priority(w, now), reverse=True)
            self._backlog = due[granted:]
        for w in due[:granted]:
            w.polling = True
            task = asyncio.create_task(self._poll(w, bought), name=f"poll-{w.session_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _poll(self, w: Watch, bought: float | None) -> None:
        answer: UpstreamSession | AvatarServerError
        elapsed = time.monotonic() - w.started
        try:
            answer = await self.upstream.get_session(w.upstream_id, prepaid_at=bought)
        except AvatarServerError as exc:
            answer = exc
        except Exception as exc:  # a bug or a closed client: counted as a failed poll, retried
            log.warning("poll crashed (%s); retrying", type(exc).__name__, extra={"session_id": w.session_id})
            answer = AvatarServerError(f"poll crashed ({type(exc).__name__})")
        w.last_poll = elapsed
        try:
            keep = await self.on_answer(w, answer)
        except AvatarServerError as exc:
            log.warning("poll answer not handled (%s); retrying", exc.code, extra={"session_id": w.session_id})
            keep = True
            answer = exc
        except Exception:
            log.exception("poll answer handling crashed", extra={"session_id": w.session_id})
            keep = True
            answer = AvatarServerError("crashed")
        w.polling = False
        if not keep or w.dropped or self._closed:
            self.drop(w.session_id)
            return
        now = time.monotonic()
        if isinstance(answer, AvatarServerError):
            w.due = now + FAILED_POLL_DELAY
        else:
            elapsed = now - w.started
            w.due = now + self._plan.next_delay(elapsed, queued=w.queued, after_window_polls=w.after_window)
            if not w.queued and elapsed > self._plan.window_end:
                w.after_window += 1
        self._push(w)
        self._wake.set()

    async def _renew_leases(self) -> None:
        ids = list(self.watches)
        stepping = [sid for sid in self.also_held() if sid not in self.watches]
        if not ids and not stepping:
            return
        held = await self.store.renew_leases(ids + stepping, self.instance_id, self.lease_seconds)
        for sid, ok in zip(ids, held[:len(ids)], strict=True):  # the stepping ones follow
            if not ok:
                log.warning("lost the provisioning lease", extra={"session_id": sid})
                self.drop(sid)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.watches.clear()
