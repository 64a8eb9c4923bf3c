"""The parts of load handling on their own: the request budget and the room's order in a real
Redis, the poll scheduler's chance of READY, the reserve of each request class."""

from __future__ import annotations

import asyncio
import time

from avatar_server.models.sessions import SessionRecord, SessionStatus
from avatar_server.sessions.poller import PollScheduler, Watch
from avatar_server.store import keys
from avatar_server.store.budget import BudgetStore
from avatar_server.store.connection import client_from_url
from avatar_server.store.room import RoomStore
from avatar_server.upstream.budget import PRIORITY, RequestBudget, reserve_for


def test_reserves_order_the_classes() -> None:
    for limit in (1, 2, 5, 10, 50, 1000):
        reserves = [reserve_for(PRIORITY[op], limit) for op in ("cancel", "consume", "create", "get", "check")]
        assert reserves[0] == 0
        assert reserves == sorted(reserves), (limit, reserves)
        assert all(r < limit or limit == 1 for r in reserves), (limit, reserves)


async def test_budget_window_is_shared_and_cancels_take_the_rest(redis_url: str) -> None:
    r = client_from_url(redis_url)
    try:
        one = RequestBudget(BudgetStore(r).take, 10)
        two = RequestBudget(BudgetStore(r).take, 10)  # another instance, the same Redis
        polls = await one.try_take(100, "get") + await two.try_take(100, "get")
        assert polls == 10 - reserve_for(PRIORITY["get"], 10)  # polls leave the end of the window
        started = time.monotonic()
        for _ in range(10 - polls):
            await two.acquire("cancel")  # at once: the reserve is the cancels'
        assert time.monotonic() - started < 0.5
        assert await one.used_now() == 10
        assert await one.try_take(1, "cancel") == 0  # the window is full for everyone now
        started = time.monotonic()
        await one.acquire("cancel")  # waits for the window to slide
        assert time.monotonic() - started > 0.5
    finally:
        await r.aclose()


async def test_room_serves_lanes_in_turn_first_come_first_served(redis_url: str) -> None:
    r = client_from_url(redis_url)
    try:
        room = RoomStore(r)
        assert (await room.enter("holder", "admin", limit=1, size=10)).go
        for sid, lane in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"), ("b2", "B")]:
            entered = await room.enter(sid, lane, limit=1, size=10)
            assert not entered.go and entered.position >= 1
        assert await room.waiting_ids() == ["a1", "b1", "c1", "a2", "b2", "a3"]
        assert await room.grant(limit=1) == []  # no free slot
        assert (await room.enter("x", "A", limit=1, size=6)).full
        served = []
        current = "holder"
        for _ in range(6):
            await room.release(current)
            granted = await room.grant(limit=1)
            assert len(granted) == 1
            current = granted[0]
            served.append(current)
        assert served == ["a1", "b1", "c1", "a2", "b2", "a3"]
        # a lane that was idle joins the current round, ahead of a lane's later arrivals
        for sid, lane in [("a4", "A"), ("a5", "A"), ("d1", "D")]:
            await room.enter(sid, lane, limit=1, size=10)
        assert (await room.waiting_ids())[:2] in (["a4", "d1"], ["d1", "a4"])
        # the place shown never rises
        pos, shown = await room.position("a5")
        assert pos == shown == 3
        await room.leave("d1")
        assert await room.position("a5") == (2, 2)
        await room.enter("e1", "E", limit=1, size=10)  # served before a5: its live place rises ...
        pos, shown = await room.position("a5")
        assert pos == 3 and shown == 2  # ... the place shown holds
    finally:
        await r.aclose()


def _watch(started_ago: float, last_poll: float) -> Watch:
    rec = SessionRecord(id="s", status=SessionStatus.PROVISIONING, avatar={}, maxDuration=60, createdAt=0)
    return Watch(record=rec, upstream_id="u", started=time.monotonic() - started_ago, queued=False,
                 last_poll=last_poll)


async def test_chance_of_ready_follows_the_learned_times() -> None:
    sched = PollScheduler(upstream=None, store=None, budget=None, instance_id="i",  # type: ignore[arg-type]
                          lease_seconds=15, on_answer=None)  # type: ignore[arg-type]
    sched._samples = sorted([2.0 + 0.01 * i for i in range(100)])  # READY between 2 and 3 s
    now = time.monotonic()
    early = sched.chance(_watch(1.0, 0.9), now)
    inside = sched.chance(_watch(2.6, 2.4), now)
    waited = sched.chance(_watch(2.6, 2.0), now)
    assert early == 0.0
    assert 0 < inside < waited <= 1.0  # longer since the last poll: likelier
    queued = _watch(2.6, 2.0)
    queued.queued = True
    assert sched.chance(queued, now) < inside
    await asyncio.sleep(0)


async def test_a_lagging_loop_refuses_starts_then_recovers() -> None:
    import pytest

    from avatar_server.errors import ServerBusy
    from avatar_server.sessions.load import LoadMonitor

    in_use = [0.1]
    monitor = LoadMonitor(max_lag=0.2, pools={"redis": lambda: in_use[0]})
    monitor.start()
    try:
        await asyncio.sleep(0.25)
        monitor.check()  # quiet: admitted
        time.sleep(0.5)  # one hiccup of the event loop is not overload ...
        await asyncio.sleep(0.15)
        monitor.check()
        ends = time.monotonic() + 1.3
        while time.monotonic() < ends:  # ... a loop that stays behind is: every beat comes late
            time.sleep(0.3)
            await asyncio.sleep(0)
        with pytest.raises(ServerBusy) as caught:
            monitor.check()
        assert caught.value.code == "server_busy" and caught.value.headers["Retry-After"] == "2"
        await asyncio.sleep(1.2)  # a quiet second later
        monitor.check()
        in_use[0] = 1.0  # a pool full for an instant is not saturation ...
        await asyncio.sleep(0.15)
        monitor.check()
        await asyncio.sleep(0.7)  # ... one full at most beats of the last second is: it refuses too
        with pytest.raises(ServerBusy) as caught:
            monitor.check()
        assert "redis pool saturated" in caught.value.message
        in_use[0] = 0.5
        await asyncio.sleep(1.1)
        monitor.check()
    finally:
        await monitor.close()
        await monitor.close()  # idempotent


async def test_a_lease_that_lapsed_unclaimed_is_taken_again_one_held_elsewhere_is_not(redis_url: str) -> None:
    from avatar_server.store.sessions import SessionStore

    r = client_from_url(redis_url)
    try:
        store = SessionStore(r)
        assert await store.take_lease("mine", "me", 0.05)
        assert await store.take_lease("theirs", "them", 5)
        await asyncio.sleep(0.1)  # "mine" lapsed (a create outlasted it) and nobody took it
        assert await store.renew_leases(["mine", "theirs"], "me", 5) == [True, False]
        assert not await store.take_lease("mine", "them", 5)  # it is held again
        await store.release_leases(["mine", "theirs"], "me")
        assert await store.take_lease("mine", "them", 5)  # given back; "theirs" untouched
        assert not await store.take_lease("theirs", "me", 5)
    finally:
        await r.aclose()


async def test_no_watch_starves_under_a_tight_budget() -> None:
    sched = PollScheduler(upstream=None, store=None, budget=None, instance_id="i",  # type: ignore[arg-type]
                          lease_seconds=15, on_answer=None)  # type: ignore[arg-type]
    sched._samples = sorted([2.0 + 0.01 * i for i in range(100)])
    now = time.monotonic()
    likely = _watch(2.6, 2.0)
    likely.due = now  # due now, READY very likely
    queued = _watch(30.0, 0.0)
    queued.queued = True
    queued.due = now - 1.0  # due a second ago: the likely one goes first ...
    assert sched.priority(likely, now) > sched.priority(queued, now)
    queued.due = now - 6.0  # ... but not for ever
    assert sched.priority(queued, now) > sched.priority(likely, now)


async def test_leases_of_watches_and_of_running_steps_are_renewed_together(redis_url: str) -> None:
    from avatar_server.store.sessions import SessionStore

    r = client_from_url(redis_url)
    try:
        store = SessionStore(r)
        sched = PollScheduler(upstream=None, store=store, budget=None, instance_id="me",  # type: ignore[arg-type]
                              lease_seconds=0.3, on_answer=None,  # type: ignore[arg-type]
                              also_held=lambda: ["creating", "finishing"])
        w = _watch(1.0, 0.0)
        sched.watches[w.session_id] = w
        for sid in ("s", "creating", "finishing"):
            assert await store.take_lease(sid, "me", 0.3)
        await asyncio.sleep(0.2)
        await sched._renew_leases()  # one round trip for the watch and both steps
        await asyncio.sleep(0.2)  # past the first TTL: all three were renewed
        assert await store.renew_leases(["s", "creating", "finishing"], "other", 5) == [False] * 3
        assert sched.watches == {"s": w}
    finally:
        await r.aclose()


async def test_a_learned_limit_counts_only_holders_the_upstream_answered_as_running(redis_url: str) -> None:
    """The flash-crowd bench learned 880 for an upstream of 40: it counted every slot holder, those
    whose create was still waiting for the budget and those no poll had answered yet. Only holders
    seen running count; the limit so learned is a lower bound, so later answers only raise it."""
    r = client_from_url(redis_url)
    try:
        room = RoomStore(r)
        holders = [f"s{i}" for i in range(10)]
        for sid in holders:  # no limit known yet: everyone takes a slot
            assert (await room.enter(sid, "A", limit=0, size=100)).go
        for sid in holders[:3]:
            await room.running(sid)
        # s9 answered queued: three seen running (s3..s8 not answered yet, or their create not left)
        assert await room.learn_limit("s9") == 3
        snap = await room.snapshot(0)
        assert (snap.limit, snap.learned, snap.alive) == (3, True, 10)
        assert not (await room.enter("late", "A", limit=0, size=100)).go  # 10 alive ≥ 3: it waits
        for sid in holders[3:6]:
            await room.running(sid)
        assert await room.learn_limit("s8") == 6  # more seen running: raised
        await room.release("s0")
        await room.release("s1")
        assert await room.learn_limit("s7") == 6  # fewer counted now, but never lowered
        assert not await r.sismember(keys.room_running(), "s0")  # a release forgets it ran
    finally:
        await r.aclose()


async def test_with_no_limit_known_at_most_the_probe_window_goes_upstream_unconfirmed(redis_url: str) -> None:
    """Learning (setting 0, nothing learned yet): a start takes a slot only while fewer than the probe
    window's holders are not yet answered as running, so a crowd does not all go upstream before
    the upstream's first ``queued`` answer; each holder seen running lets the next one in."""
    r = client_from_url(redis_url)
    try:
        room = RoomStore(r)
        for i in range(3):
            assert (await room.enter(f"s{i}", "A", limit=0, size=100, probe=3)).go
        late = [await room.enter(f"w{i}", "A", limit=0, size=100, probe=3) for i in range(2)]
        assert [(e.go, e.position) for e in late] == [(False, 1), (False, 2)]
        assert await room.grant(limit=0, probe=3) == []  # three unconfirmed: no room yet
        assert await room.running("s0")
        assert await room.grant(limit=0, probe=3) == ["w0"]  # s0 answered running: w0 goes
        assert not await room.running("nobody")  # holds no slot: nothing marked
        assert await room.learn_limit("w0") == 1  # then the upstream queues w0: s0 is all it runs
        assert await room.grant(limit=0, probe=3) == []  # the learned limit (1) rules now
        assert (await room.snapshot(0)).limit == 1
    finally:
        await r.aclose()
