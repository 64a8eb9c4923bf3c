from __future__ import annotations

import random

from avatar_server.sessions.polling import MIN_INTERVAL, PollPlan, quantile


def test_without_history_polls_densely() -> None:
    plan = PollPlan.learn([1.0, 2.0])
    assert plan.next_delay(0.0) == MIN_INTERVAL
    assert plan.next_delay(5.0) == MIN_INTERVAL


def test_learned_window_is_dense_only_where_ready_is_likely() -> None:
    rng = random.Random(1)
    samples = [rng.lognormvariate(0, 0.3) * 3 for _ in range(200)]
    plan = PollPlan.learn(samples)
    s = sorted(samples)
    assert plan.window_start < quantile(s, 0.05) < quantile(s, 0.95) < plan.window_end
    assert plan.next_delay(0.0) > MIN_INTERVAL  # early: sparse
    assert plan.next_delay(0.0) <= 1.0  # but never blind for more than a second
    assert plan.next_delay(3.0) == MIN_INTERVAL  # in the window: dense
    backoff = [plan.next_delay(plan.window_end + 1, after_window_polls=n) for n in range(10)]
    assert backoff == sorted(backoff) and backoff[-1] == 1.0


def test_never_faster_than_ten_per_second_and_queued_backs_off() -> None:
    plan = PollPlan.learn([2.0] * 50)
    for t in [x / 20 for x in range(0, 200)]:
        assert plan.next_delay(t) >= MIN_INTERVAL
    assert plan.next_delay(2.0, queued=True) == 2.0


def test_simulated_requests_and_latency_against_one_second_polling() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(0.7, 0.35) for _ in range(200)]
    plan = PollPlan.learn(samples)
    lat_ours, lat_ref = [], []
    for _ in range(500):
        ready = rng.lognormvariate(0.7, 0.35)
        t, n = 0.0, 0
        while t < ready:
            t += plan.next_delay(t, after_window_polls=max(0, n))
            n += 1
        lat_ours.append(t - ready)
        lat_ref.append(-ready % 1.0)
    lat_ours.sort()
    lat_ref.sort()
    assert quantile(lat_ours, 0.5) <= quantile(lat_ref, 0.5) / 4
