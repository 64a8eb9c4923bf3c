"""Upstream faults: transient ones are ridden out, refusals reach the caller as clear
502-class errors without retries, and an ambiguous create is never retried."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from ..harness import ServerHarness, fast_engine_config, make_settings, upstream_final


async def stats(server: ServerHarness) -> dict:
    return (await server.control("GET", "/stats"))["requests"]


@pytest.mark.parametrize("op", ["create", "get", "consume"])
@pytest.mark.parametrize("status", [429, 503])
async def test_transient_faults_are_ridden_out(server: ServerHarness, op: str, status: int) -> None:
    await server.control("DELETE", "/stats")
    rule = {"op": op, "status": status, "times": 2}
    if status == 429:
        rule["retryAfter"] = 1
    await server.control("POST", "/faults", {"rules": [rule]})
    code, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "human-resource"})
    assert code == 200, body
    assert body["token"]
    counts = await stats(server)
    assert counts[op] >= 3  # two refusals, then the request that went through
    faults = await server.control("GET", "/stats")
    assert faults["faultsInjected"].get(op, 0) == 2 or sum(faults["faultsInjected"].values()) == 2


@pytest.mark.parametrize("status,code", [(400, "upstream_rejected"), (401, "upstream_auth")])
async def test_refusals_are_not_retried(server: ServerHarness, status: int, code: str) -> None:
    await server.control("DELETE", "/stats")
    await server.control("POST", "/faults", {"rules": [{"op": "create", "status": status, "times": 1}]})
    http, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "human-resource"})
    assert http == 502, body
    assert body["error"]["code"] == "session_error"
    assert (await stats(server))["create"] == 1
    # the record says why
    status_, page = await server.admin("GET", "/v1/sessions?status=ended")
    rec = page["data"][0]
    assert rec["endReason"] == "error"
    assert rec["upstreamId"] is None


async def test_ambiguous_create_is_not_retried(redis_url, data_dir, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(data_dir, redis_url, upstream_timeout=0.5)
    h = await ServerHarness(settings, fast_engine_config(ready_ttl=5.0)).start()
    try:
        await h.control("POST", "/faults", {"rules": [{"op": "create", "when": "after", "delaySeconds": 2}]})
        code, created = await h.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset",
                                                                        "presetId": "fashion-designer"}})
        assert code == 201
        # the answer never came, but reconciliation finds the one upstream session it made and adopts it
        rec = await h.wait_for(created["id"], lambda r: r["status"] != "PROVISIONING", timeout=10)
        sessions = await h.control("GET", "/sessions")
        assert (await stats(h))["create"] == 1  # exactly one create reached the upstream
        assert [s["id"] for s in sessions] == [rec["upstreamId"]] and rec["status"] == "READY", rec
        assert any("ambiguous" in r.getMessage().lower()
                   for r in caplog.records if r.name.startswith("avatar_server.upstream"))
        assert any(r.getMessage().startswith("create reconciled: adopted")
                   for r in caplog.records if r.name == "avatar_server.reconcile")
        assert settings.admin_token not in caplog.text
        code, ended = await h.admin("DELETE", f"/v1/sessions/{created['id']}")
        assert code == 200 and ended["status"] == "ENDED"
        final = await upstream_final(h.control, rec["upstreamId"])
        assert final["status"] == "CANCELLED"
    finally:
        await h.stop_all()


async def test_queued_upstream_is_reported_and_backs_off(server: ServerHarness) -> None:
    await server.control("PATCH", "/config", {"concurrencyLimit": 1})
    first = await server.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset", "presetId": "influencer"}})
    second = await server.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset", "presetId": "influencer"}})
    assert first[0] == second[0] == 201
    rec = await server.wait_for(second[1]["id"], lambda r: r["queued"] is True, timeout=10)
    assert rec["status"] == "PROVISIONING"
    await server.admin("DELETE", f"/v1/sessions/{first[1]['id']}")
    rec = await server.wait_for(second[1]["id"], lambda r: r["status"] == "READY", timeout=15)
    assert rec["queued"] is False
    await server.admin("DELETE", f"/v1/sessions/{second[1]['id']}")


async def test_delete_during_provisioning_cancels_upstream(server: ServerHarness) -> None:
    await server.control("PATCH", "/config", {"provisioningDelay": "fixed:5"})
    code, created = await server.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset",
                                                                         "presetId": "influencer"}})
    rec = await server.wait_for(created["id"], lambda r: r["upstreamId"] is not None)
    code, ended, _ = await server.call("DELETE", f"/v1/sessions/{created['id']}", token=created["clientToken"])
    assert code == 200 and ended["endReason"] == "client"
    ups = {s["id"]: s for s in await server.control("GET", "/sessions")}
    assert ups[rec["upstreamId"]]["status"] == "CANCELLED"


async def test_ready_without_a_session_key_ends_the_session_and_cancels_upstream(redis_url, data_dir,
                                                                                   aiohttp_server) -> None:
    """An upstream (a minimal stand-in, on real HTTP) that answers READY with no ``sessionKey``: there
    is nothing to consume, so the session ends ``error`` at once and its upstream session is cancelled
    (it used to raise inside the poller and poll on until the provisioning deadline)."""
    upstream_id = "0b7c1c9e-3f3a-4d3e-9a51-2f0c2b6a8d11"
    seen: list[str] = []

    async def create(request: web.Request) -> web.Response:
        seen.append("create")
        return web.json_response({"id": upstream_id})

    async def get(request: web.Request) -> web.Response:
        seen.append("get")
        return web.json_response({"id": upstream_id, "status": "READY", "createdAt": "2026-11-30T00:00:00.000Z",
                                  "expiresAt": "2026-11-30T00:01:00.000Z"})

    async def cancel(request: web.Request) -> web.Response:
        seen.append("cancel")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/realtime_sessions", create)
    app.router.add_get("/v1/realtime_sessions/{id}", get)
    app.router.add_delete("/v1/realtime_sessions/{id}", cancel)
    fake = await aiohttp_server(app)
    h = await ServerHarness(make_settings(data_dir, redis_url, runway_secret="key_fake_runway_secret",
                                          runway_base_url=str(fake.make_url("")))).start()
    try:
        code, created = await h.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset",
                                                                        "presetId": "fashion-designer"}})
        assert code == 201, created
        rec = await h.wait_for(created["id"], lambda r: r["status"] == "ENDED", timeout=10)
        assert rec["endReason"] == "error" and rec["upstreamId"] == upstream_id, rec
        for _ in range(50):
            if "cancel" in seen:
                break
            await asyncio.sleep(0.05)
        assert seen.count("create") == 1 and "cancel" in seen, seen
    finally:
        await h.stop_all()
