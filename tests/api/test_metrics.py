"""GET /metrics: Prometheus text parsed with prometheus_client's own parser; the credential rules
(401 without one, the admin token, AVATAR_SERVER_METRICS_TOKEN, nothing else); counters moving
with real sessions (starts and refusals, ends by reason, upstream requests and latency,
READY→credentials, cap lateness); deployment gauges read from Redis, the same on every instance,
counters per instance; the waiting room's size."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from avatar_server.store.embedded import free_port

from ..harness import ServerHarness, fast_engine_config, make_settings

ORIGIN = "https://shop.example.com"
PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}
METRICS_TOKEN = "mtk_" + "m" * 28


@pytest.fixture
async def metered(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    h = await ServerHarness(make_settings(data_dir, redis_url, metrics_token=METRICS_TOKEN),
                            fast_engine_config()).start()
    try:
        yield h
    finally:
        await h.stop_all()


async def scrape(server: ServerHarness, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text, headers = await server.call("GET", "/metrics", token=token or server.settings.admin_token)
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Summed over the labels not given."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def test_credentials(metered: ServerHarness) -> None:
    status, body, _ = await metered.call("GET", "/metrics")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body, _ = await metered.call("GET", "/metrics", token="mtk_wrong_" + "x" * 20)
    assert status == 401
    _, site = await metered.admin("POST", "/v1/sites", {"name": "s", "allowedOrigins": [ORIGIN],
                                                         "avatarIds": ["cooking-teacher"], "maxConcurrentSessions": 1})
    status, _, _ = await metered.call("GET", "/metrics", token=site["publishableKey"])
    assert status == 403
    assert value(await scrape(metered, METRICS_TOKEN), "avatar_server_sessions", status="RUNNING") == 0
    assert value(await scrape(metered), "avatar_server_sessions", status="RUNNING") == 0
    # the metrics token opens nothing else
    status, _, _ = await metered.call("GET", "/v1/sites", token=METRICS_TOKEN)
    assert status == 401


async def test_counters_move_with_sessions(metered: ServerHarness) -> None:
    before = await scrape(metered)
    assert value(before, "avatar_server_session_starts_total", outcome="admitted") == 0
    status, site = await metered.admin("POST", "/v1/sites", {"name": "s", "allowedOrigins": [ORIGIN],
                                                              "avatarIds": ["cooking-teacher"],
                                                              "maxConcurrentSessions": 1})
    assert status == 201
    status, conn, _ = await metered.call("POST", "/v1/sessions/connect", token=site["publishableKey"],
                                         json_body={"avatarId": "cooking-teacher"}, headers={"Origin": ORIGIN})
    assert status == 200, conn
    # refused: the site's limit (429 concurrency_limit), an avatar it does not allow (403)
    status, err, _ = await metered.call("POST", "/v1/sessions/connect", token=site["publishableKey"],
                                        json_body={"avatarId": "cooking-teacher"}, headers={"Origin": ORIGIN})
    assert status == 429 and err["error"]["code"] == "concurrency_limit"
    status, err, _ = await metered.call("POST", "/v1/sessions", token=site["publishableKey"],
                                        json_body={"avatar": {"type": "runway-preset", "presetId": "influencer"}},
                                        headers={"Origin": ORIGIN})
    assert status == 403 and err["error"]["code"] == "avatar_not_allowed"
    running = await scrape(metered)
    assert value(running, "avatar_server_session_starts_total", outcome="admitted") == 1
    assert value(running, "avatar_server_session_starts_total", outcome="concurrency_limit") == 1
    assert value(running, "avatar_server_session_starts_total", outcome="avatar_not_allowed") == 1
    assert value(running, "avatar_server_sessions", status="RUNNING") == 1
    assert value(running, "avatar_server_sessions_past_cap") == 0
    await asyncio.sleep(0.05)  # the observer runs on a task of its own
    running = await scrape(metered)
    assert value(running, "avatar_server_ready_to_credentials_seconds_count") == 1
    assert value(running, "avatar_server_upstream_requests_total", operation="create", status="200") >= 1
    assert value(running, "avatar_server_upstream_requests_total", operation="consume", status="200") == 1
    assert value(running, "avatar_server_upstream_request_seconds_count", operation="create") >= 1
    status, _ = await metered.admin("DELETE", f"/v1/sessions/{conn['sessionId']}")
    assert status == 200
    await asyncio.sleep(0.1)
    ended = await scrape(metered)
    assert value(ended, "avatar_server_session_ends_total", reason="admin") == 1
    assert value(ended, "avatar_server_sessions", status="RUNNING") == 0
    assert value(ended, "avatar_server_sessions", status="ENDED") == 1
    assert total(ended, "avatar_server_upstream_requests_total", operation="cancel") >= 1
    assert value(ended, "avatar_server_session_ends_total", reason="cap") == 0  # every reason is listed


async def test_cap_lateness_is_measured(metered: ServerHarness) -> None:
    status, conn = await metered.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher",
                                                                        "maxDuration": 10})
    assert status == 200, conn
    await metered.wait_for(conn["sessionId"], lambda r: r["status"] == "ENDED", timeout=20)
    await asyncio.sleep(0.1)
    samples = await scrape(metered)
    assert value(samples, "avatar_server_session_ends_total", reason="cap") == 1
    assert value(samples, "avatar_server_cap_lateness_seconds_count") == 1
    assert value(samples, "avatar_server_cap_lateness_seconds_sum") < 1.0
    assert value(samples, "avatar_server_cap_lateness_seconds_bucket", le="0.5") == 1


async def test_gauges_are_the_deployments_and_counters_each_instances(redis_url: str, data_dir: Path) -> None:
    base = make_settings(data_dir, redis_url, upstream_concurrency=1)
    a = await ServerHarness(base, fast_engine_config()).start()
    b = await ServerHarness(replace(base, port=free_port()), fast_engine_config()).start()
    try:
        status, conn = await a.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
        assert status == 200, conn
        status, waiting = await a.admin("POST", "/v1/sessions", {"avatar": PRESET})  # no slot: it waits
        assert status == 201, waiting
        on_a, on_b = await scrape(a), await scrape(b)
        for samples in (on_a, on_b):
            assert value(samples, "avatar_server_sessions", status="RUNNING") == 1
            assert value(samples, "avatar_server_sessions", status="PROVISIONING") == 1
            assert value(samples, "avatar_server_waiting_room_size") == 1
            assert value(samples, "avatar_server_waiting_room_capacity") == base.waiting_room_size
            assert value(samples, "avatar_server_upstream_slots_in_use") == 1
            assert value(samples, "avatar_server_upstream_slots_limit") == 1
        assert value(on_a, "avatar_server_session_starts_total", outcome="admitted") == 2
        assert value(on_b, "avatar_server_session_starts_total", outcome="admitted") == 0
        for sid in (waiting["id"], conn["sessionId"]):
            await a.admin("DELETE", f"/v1/sessions/{sid}")
    finally:
        await b.stop_all()
        await a.stop_all()


async def test_the_dashboard_and_alert_rules_name_only_exported_metrics(metered: ServerHarness) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    rules = yaml.safe_load((docs / "alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    exprs = [r["expr"] for r in rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    status, text, _ = await metered.call("GET", "/metrics", token=METRICS_TOKEN)
    assert status == 200
    families = {f.name: f.type for f in text_string_to_metric_families(text)}  # counters without _total
    named = {m for e in exprs for m in re.findall(r"avatar_server_[a-z_]+", e)}
    assert {"avatar_server_sessions_past_cap", "avatar_server_cap_lateness_seconds_bucket",
            "avatar_server_waiting_room_size", "avatar_server_upstream_requests_total"} <= named
    unknown = set()
    for name in named:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        kind = families.get(base)
        suffix = name[len(base):]
        if kind is None or (suffix == "_total") != (kind == "counter") or (
                suffix in ("_bucket", "_sum", "_count") and kind != "histogram"):
            unknown.add(name)
    assert not unknown, unknown
