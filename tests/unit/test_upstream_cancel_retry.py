"""A cancel (DELETE of a realtime session) is idempotent: the client retries it on a 500 as on
502/503/504, while a create or a consume answered 500 is still never sent again."""

from __future__ import annotations

import httpx
import pytest

from avatar_server.errors import UpstreamAmbiguous, UpstreamUnavailable
from avatar_server.upstream.retry import (
    CANCEL_RETRYABLE_STATUSES,
    CREATE_RETRYABLE_STATUSES,
    RETRYABLE_STATUSES,
    RetryPolicy,
)

from .test_upstream_client import CREATE_BODY, SESSION_KEY, SID, FakeSleep, Upstream, err, make_client


def test_cancel_statuses_are_the_idempotent_ones_and_500() -> None:
    assert CANCEL_RETRYABLE_STATUSES == RETRYABLE_STATUSES | {500}
    assert 500 not in RETRYABLE_STATUSES and 500 not in CREATE_RETRYABLE_STATUSES


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


async def test_cancel_is_retried_after_a_500(sleep: FakeSleep) -> None:
    upstream = Upstream(err(500, "internal"), httpx.Response(204))
    async with make_client(upstream, sleep) as client:
        assert await client.cancel_session(SID) is True
    assert [r.method for r in upstream.requests] == ["DELETE", "DELETE"]
    assert len(sleep.delays) == 1 and 0 <= sleep.delays[0] <= 0.5
    # one call: the same request id on both attempts
    assert len({r.headers["X-Request-Id"] for r in upstream.requests}) == 1
    assert client.stats["cancel"] == 2


async def test_cancel_500_after_the_upstream_acted_then_404_is_already_gone(sleep: FakeSleep) -> None:
    upstream = Upstream(err(500), err(404, "not found"))
    async with make_client(upstream, sleep) as client:
        assert await client.cancel_session(SID) is False
    assert len(upstream.requests) == 2


async def test_cancel_500_every_time_is_bounded_then_unavailable(sleep: FakeSleep) -> None:
    upstream = Upstream(err(500))
    async with make_client(upstream, sleep, policy=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.cancel_session(SID)
    assert len(upstream.requests) == 3 and len(sleep.delays) == 2


async def test_reads_are_not_retried_on_500(sleep: FakeSleep) -> None:
    upstream = Upstream(err(500))
    async with make_client(upstream, sleep) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.get_session(SID)
    assert len(upstream.requests) == 1 and sleep.delays == []


async def test_create_and_consume_still_not_retried_after_a_500(sleep: FakeSleep) -> None:
    creates = Upstream(err(500), httpx.Response(200, json={"id": SID}))
    async with make_client(creates, sleep) as client:
        with pytest.raises(UpstreamAmbiguous):
            await client.create_session(CREATE_BODY)
    consumes = Upstream(err(500), httpx.Response(200, json={"url": "wss://x", "token": "t", "roomName": "r"}))
    async with make_client(consumes, sleep) as client:
        with pytest.raises(UpstreamAmbiguous):
            await client.consume(SID, SESSION_KEY)
    assert len(creates.requests) == len(consumes.requests) == 1 and sleep.delays == []
