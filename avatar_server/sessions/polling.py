"""When to poll a provisioning session: dense only where READY is likely.

The upstream offers no push, so READY is noticed by polling ``GET /v1/realtime_sessions/{id}``.
Runway's reference server polls every 1 s: half a second of added latency on average and
up to a full second. Polling every 100 ms all the time would cut that to ~50 ms but cost
ten requests a second for the whole provisioning time.

``PollPlan`` learns the provisioning time from recent sessions (samples shared in Redis)
and spends requests where they buy latency:

* before the window (``q05 × 0.85``): sleep straight towards it, in steps of at most 1 s
  (so an early READY is still seen within a second);
* inside the window (up to ``q95 × 1.15``): every 100 ms — never faster, so no session is
  polled at more than 10 requests per second;
* past the window: back off geometrically (×1.5) from 100 ms to 1 s;
* while the upstream reports ``queued: true``: every 2 s, and the clock restarts when the
  session leaves the queue (the learned time is time from dequeue to READY).

With fewer than 5 samples the window is [0, 10 s] (dense from the start): correct, costlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_INTERVAL = 0.1  # seconds: at most 10 requests per second per session
MAX_INTERVAL = 1.0
QUEUED_INTERVAL = 2.0
MIN_SAMPLES = 5


def quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


@dataclass(frozen=True)
class PollPlan:
    window_start: float
    window_end: float

    @classmethod
    def learn(cls, samples: Sequence[float]) -> PollPlan:
        if len(samples) < MIN_SAMPLES:
            return cls(0.0, 10.0)
        s = sorted(samples)
        return cls(quantile(s, 0.05) * 0.85, quantile(s, 0.95) * 1.15)

    def next_delay(self, elapsed: float, *, queued: bool = False, after_window_polls: int = 0) -> float:
        """Seconds to wait before the next poll, ``elapsed`` seconds into provisioning."""
        if queued:
            return QUEUED_INTERVAL
        if elapsed < self.window_start - MIN_INTERVAL:
            return max(MIN_INTERVAL, min(MAX_INTERVAL, self.window_start - elapsed))
        if elapsed <= self.window_end:
            return MIN_INTERVAL
        return min(MAX_INTERVAL, MIN_INTERVAL * 1.5 ** (after_window_polls + 1))
