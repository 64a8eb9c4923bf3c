"""Retry policy for upstream calls: which statuses, how long to wait, when to stop.

Pure (no I/O): the client asks a :class:`RetryBudget` for the next delay and
sleeps with whatever ``sleep`` it was given, so tests inject a fake sleep and
a seeded ``random.Random``.

Delay for retry ``n`` (0 = the first retry) is *full jitter*:
``uniform(0, min(max_delay, base_delay * 2**n))``. A ``Retry-After`` from the
upstream (seconds or HTTP-date) is a floor, honoured up to ``max_retry_after``.
Retrying stops when ``max_attempts`` requests were sent, or when the next
delay would not fit in what is left of ``max_total`` (then the caller gives
up at once rather than sleeping past its budget).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Answers after which the request may be sent again (idempotent operations).
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 502, 503, 504})

# Cancelling a realtime session (DELETE) is idempotent: a 500 is retried too — a cancel that
# happened already is simply confirmed by the next attempt. Reads keep RETRYABLE_STATUSES.
CANCEL_RETRYABLE_STATUSES: frozenset[int] = RETRYABLE_STATUSES | {500}

# Refusals only: the upstream certainly did not act on the request. 502/504
# come from a gateway that may already have forwarded the request, so they
# are not here (see client.py on non-idempotent operations).
CREATE_RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 503})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 4  # total attempts including the first
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_total: float = 30.0  # total time budget across attempts (s)
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_total < 0 or self.max_retry_after < 0:
            raise ValueError("delays and budgets must be >= 0")

    def backoff_cap(self, attempt: int) -> float:
        """Upper bound of the jittered delay before retry ``attempt`` (0-based)."""
        return min(self.max_delay, self.base_delay * (2 ** max(0, attempt)))

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry ``attempt`` (0 = first retry).

        Full jitter in ``[0, backoff_cap(attempt)]``; a ``retry_after`` from the
        upstream is a floor, clipped to ``max_retry_after``.
        """
        jittered = rng.uniform(0.0, self.backoff_cap(attempt))
        if retry_after is not None and retry_after > 0:
            return max(jittered, min(retry_after, self.max_retry_after))
        return jittered


class RetryBudget:
    """Tracks one logical call's attempts and time against a :class:`RetryPolicy`.

    Time used is ``max(wall time since start, sum of delays slept)``: with a
    real sleep the wall clock covers the sleeps; with a fake sleep (tests) the
    recorded delays still count, so the budget stays bounded either way.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._rng = rng
        self._clock = clock
        self._start = clock()
        self.slept = 0.0
        self.attempts = 0  # requests sent so far

    def used(self) -> float:
        return max(self._clock() - self._start, self.slept)

    def remaining(self) -> float:
        return max(0.0, self.policy.max_total - self.used())

    def next_delay(self, retry_after: float | None) -> float | None:
        """Delay before the next attempt, or None when retrying must stop.

        Stops when attempts are exhausted, when ``retry_after`` exceeds
        ``max_retry_after`` or the remaining budget, or when the jittered
        delay does not fit in the remaining budget.
        """
        if self.attempts >= self.policy.max_attempts:
            return None
        remaining = self.remaining()
        if retry_after is not None and (retry_after > self.policy.max_retry_after or retry_after > remaining):
            return None
        delay = self.policy.delay(self.attempts - 1, retry_after, self._rng)
        if delay > remaining:
            return None
        return delay

    def record_sleep(self, delay: float) -> None:
        self.slept += delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns seconds to wait (>= 0), or None when absent or unparseable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return max(0.0, (when - current).total_seconds())
