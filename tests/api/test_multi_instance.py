"""Two instances share one Redis and one upstream: the loss of either loses no session."""

from __future__ import annotations

from pathlib import Path

from ..harness import ENGINE_KEY, EngineHarness, ServerHarness, assert_no_leaks, make_settings, upstream_final


async def two_instances(redis_url: str, data_dir: Path, engine: EngineHarness) -> tuple[ServerHarness, ServerHarness]:
    common = {"runway_secret": ENGINE_KEY, "runway_base_url": engine.base, "lease_seconds": 1.0}
    a = await ServerHarness(make_settings(data_dir, redis_url, **common)).start()
    b = await ServerHarness(make_settings(data_dir, redis_url, **common)).start()
    return a, b


async def test_provisioning_resumes_on_the_surviving_instance(redis_url, data_dir, engine) -> None:
    await engine.control("PATCH", "/config", {"provisioningDelay": "fixed:3"})
    a, b = await two_instances(redis_url, data_dir, engine)
    try:
        status, created = await a.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset",
                                                                           "presetId": "cat-character"}})
        assert status == 201
        await a.wait_for(created["id"], lambda r: r["upstreamId"] is not None)
        await a.stop()  # instance A is lost mid-provisioning
        rec = await b.wait_for(created["id"], lambda r: r["status"] == "READY", timeout=15)
        assert rec["readyAt"]
        engine_sessions = {s["id"]: s for s in await engine.control("GET", "/sessions")}
        assert engine_sessions[rec["upstreamId"]]["consumed"] is True  # consumed once, by B
        status, _ = await b.admin("DELETE", f"/v1/sessions/{created['id']}")
        assert status == 200
        await assert_no_leaks(b, engine, engine.control)
    finally:
        await a.stop_all()
        await b.stop_all()


async def test_cap_fires_on_the_surviving_instance(redis_url, data_dir, engine) -> None:
    await engine.control("PATCH", "/config", {"honourMaxDuration": False})
    a, b = await two_instances(redis_url, data_dir, engine)
    try:
        status, body = await a.admin("POST", "/v1/sessions/connect", {"avatarId": "cat-character",
                                                                      "maxDuration": 10})
        assert status == 200
        await a.stop()
        rec = await b.wait_for(body["sessionId"], lambda r: r["status"] == "ENDED", timeout=15)
        assert rec["endReason"] == "cap"
        assert (await upstream_final(engine.control, rec["upstreamId"]))["status"] == "CANCELLED"
    finally:
        await a.stop_all()
        await b.stop_all()
