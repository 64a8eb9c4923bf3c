"""The timer loop on a real Redis with a stand-in session service: it only claims, each timer
is handled on its own bounded task, status checks are capped and never hold an end, a
backlog drains in one go, and close() leaves nothing running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from avatar_server.errors import NotFound
from avatar_server.models.sessions import EndReason, SessionStatus
from avatar_server.runway import RealtimeStatus
from avatar_server.sessions import timers as timers_mod
from avatar_server.sessions.lifecycle import LifecycleConfig
from avatar_server.sessions.timers import CLAIM_LIMIT, MAX_CHECKS, TimerLoop
from avatar_server.store import keys
from avatar_server.store.connection import client_from_url
from avatar_server.store.sessions import SessionStore


class StalledUpstream:
    """Every status read hangs until released; counts how many are in flight at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.peak = 0

    async def get_session(self, upstream_id: str, **kw: Any) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.release.wait()
            return SimpleNamespace(status=RealtimeStatus.RUNNING)
        finally:
            self.in_flight -= 1


class StubService:
    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.upstream = StalledUpstream()
        self.config = LifecycleConfig(cap_seconds=300, provision_timeout=90, ready_timeout=60,
                                      abandon_grace=15, upstream_check_interval=1.0)
        self.records: dict[str, Any] = {}
        self.ended: dict[str, EndReason] = {}

    async def get(self, session_id: str) -> Any:
        if session_id not in self.records:
            raise NotFound(f"no session {session_id}")
        return self.records[session_id]

    async def end(self, session_id: str, reason: EndReason, detail: str | None = None, **fields: Any) -> None:
        self.ended[session_id] = reason

    async def recover(self) -> int:
        return 0

    def running(self, session_id: str) -> None:
        self.records[session_id] = SimpleNamespace(status=SessionStatus.RUNNING, upstreamId="up-" + session_id,
                                                   upstreamStatus="RUNNING", endsAt=time.time())


@pytest.fixture
async def svc(redis_url: str) -> AsyncIterator[StubService]:
    redis = client_from_url(redis_url)
    yield StubService(SessionStore(redis))
    await redis.aclose()


async def due(svc: StubService, *members: str) -> None:
    await svc.store.r.zadd(keys.timers(), {m: time.time() - 1 for m in members})


async def test_a_backlog_drains_in_one_claim(svc: StubService) -> None:
    backlog = 2 * CLAIM_LIMIT + 50
    await due(svc, *(f"warn30:gone-{i}" for i in range(backlog)))  # sessions gone: handled as done
    loop = TimerLoop(svc)  # type: ignore[arg-type]
    try:
        assert await loop.claim_due() == backlog  # full claims are followed at once by another
        await asyncio.wait(list(loop._handlers), timeout=10)
        assert await svc.store.r.zcard(keys.timers()) == 0  # every one handled and marked done
    finally:
        await loop.close()


async def test_stalled_checks_are_capped_and_never_hold_an_end(svc: StubService) -> None:
    n = MAX_CHECKS + 10
    for i in range(n):
        svc.running(f"s{i}")
    await due(svc, *(f"check:s{i}" for i in range(n)))
    loop = TimerLoop(svc)  # type: ignore[arg-type]
    try:
        assert await loop.claim_due() == n
        for _ in range(100):
            if svc.upstream.in_flight == MAX_CHECKS:
                break
            await asyncio.sleep(0.01)
        assert svc.upstream.in_flight == MAX_CHECKS  # the rest wait for a slot, holding no connection
        # every check slot is held by a read that does not come back; a cap comes due
        await due(svc, "cap:s0", "abandon:s1")
        assert await loop.claim_due() == 2
        for _ in range(100):
            if len(svc.ended) == 2:
                break
            await asyncio.sleep(0.01)
        assert svc.ended == {"s0": EndReason.CAP, "s1": EndReason.ABANDONED}
        assert svc.upstream.peak == MAX_CHECKS
    finally:
        t0 = time.monotonic()
        await loop.close()  # the stalled checks are cancelled, not waited for
        assert time.monotonic() - t0 < 1.0
    assert not loop._handlers and svc.upstream.in_flight == 0
    await loop.close()  # idempotent


async def test_a_handler_past_its_time_limit_is_cut_and_comes_due_again(
    svc: StubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timers_mod, "HANDLER_TIMEOUT", 0.2)
    svc.running("s0")
    await due(svc, "check:s0")
    loop = TimerLoop(svc)  # type: ignore[arg-type]
    try:
        claimed_at = time.time()
        assert await loop.claim_due() == 1
        await asyncio.wait(list(loop._handlers), timeout=5)
        assert not loop._handlers and svc.upstream.in_flight == 0
        # still claimed: due again when the claim runs out, on this instance or another
        score = await svc.store.r.zscore(keys.timers(), "check:s0")
        assert score is not None and score >= claimed_at + timers_mod.CLAIM_LEASE - 1
    finally:
        await loop.close()


async def test_a_cap_claimed_as_redis_goes_away_fires_when_it_is_back_not_a_lease_later(svc: StubService) -> None:
    """The cap was claimed, then the store stopped answering under its handler (here: the first
    three reads of the record raise redis-py's ConnectionError). It is handled again within its
    claim as soon as the store answers, instead of waiting out the 30 s claim lease."""
    svc.running("s1")
    get = svc.get
    failures = [RedisConnectionError("Connection refused")] * 3

    async def flaky_get(session_id: str) -> Any:
        if failures:
            raise failures.pop()
        return await get(session_id)

    svc.get = flaky_get  # type: ignore[method-assign]
    await due(svc, "cap:s1")
    loop = TimerLoop(svc)
    loop.start()
    try:
        for _ in range(100):
            if "s1" in svc.ended:
                break
            await asyncio.sleep(0.05)
        assert svc.ended == {"s1": EndReason.CAP} and failures == []
        for _ in range(40):  # and it is marked done, not left claimed
            if await svc.store.r.zscore(keys.timers(), "cap:s1") is None:
                break
            await asyncio.sleep(0.05)
        assert await svc.store.r.zscore(keys.timers(), "cap:s1") is None
    finally:
        await loop.close()
