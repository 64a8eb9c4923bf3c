from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from avatar_server.upstream.retry import (
    CREATE_RETRYABLE_STATUSES,
    RETRYABLE_STATUSES,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
)


def test_status_sets() -> None:
    assert RETRYABLE_STATUSES == {408, 429, 502, 503, 504}
    assert CREATE_RETRYABLE_STATUSES == {408, 429, 503}
    assert not CREATE_RETRYABLE_STATUSES & {500, 502, 504}


def test_full_jitter_stays_within_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(1234)
    for attempt in range(8):
        cap = min(8.0, 0.5 * 2**attempt)
        samples = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(0.0 <= s <= cap for s in samples)
        # full jitter: spread across the range, not a constant
        assert max(samples) > cap * 0.8 and min(samples) < cap * 0.2


def test_jitter_is_deterministic_for_a_seed() -> None:
    policy = RetryPolicy()
    a = [policy.delay(i, None, random.Random(7)) for i in range(4)]
    b = [policy.delay(i, None, random.Random(7)) for i in range(4)]
    assert a == b


def test_retry_after_is_a_floor_clipped_to_max() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, max_retry_after=60.0)
    rng = random.Random(0)
    assert policy.delay(0, 3.0, rng) == 3.0  # jitter cap 0.5 < 3
    assert policy.delay(0, 120.0, rng) == 60.0
    assert 0.0 <= policy.delay(0, 0.0, rng) <= 0.5


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_total=-1)


def test_budget_stops_after_max_attempts() -> None:
    budget = RetryBudget(RetryPolicy(max_attempts=3), random.Random(0), clock=lambda: 0.0)
    delays = []
    for _ in range(10):
        budget.attempts += 1
        delay = budget.next_delay(None)
        if delay is None:
            break
        delays.append(delay)
        budget.record_sleep(delay)
    assert budget.attempts == 3
    assert len(delays) == 2


def test_budget_stops_when_delay_exceeds_remaining_time() -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=1.0, max_delay=1.0, max_total=3.0)
    budget = RetryBudget(policy, random.Random(3), clock=lambda: 0.0)
    while True:
        budget.attempts += 1
        delay = budget.next_delay(None)
        if delay is None:
            break
        budget.record_sleep(delay)
    assert budget.slept <= 3.0
    assert budget.attempts < 1000


def test_budget_gives_up_at_once_when_retry_after_exceeds_budget_or_cap() -> None:
    budget = RetryBudget(RetryPolicy(max_total=10.0), random.Random(0), clock=lambda: 0.0)
    budget.attempts = 1
    assert budget.next_delay(11.0) is None
    assert budget.next_delay(5.0) == 5.0
    capped = RetryBudget(
        RetryPolicy(max_total=500.0, max_retry_after=60.0), random.Random(0), clock=lambda: 0.0
    )
    capped.attempts = 1
    assert capped.next_delay(61.0) is None


def test_budget_counts_wall_clock_time() -> None:
    now = [0.0]
    budget = RetryBudget(RetryPolicy(max_total=5.0), random.Random(0), clock=lambda: now[0])
    budget.attempts = 1
    now[0] = 4.9
    assert budget.next_delay(0.5) is None  # only 0.1 s left
    assert budget.remaining() == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 11, 6, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 06 Nov 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 06 Nov 2024 11:59:00 GMT", now=now) == 0.0  # in the past
