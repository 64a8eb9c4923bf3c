"""Every end of a session: the cap (also across a restart), timeouts, abandonment,
upstream failure — each one leaves the upstream session terminal."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import aiohttp

from avatar_server import appkeys as K
from avatar_server.store.connection import client_from_url

from ..harness import EngineHarness, ServerHarness, upstream_final

PRESET = {"type": "runway-preset", "presetId": "influencer"}


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def engine_session(control, upstream_id: str) -> dict:
    return {s["id"]: s for s in await control("GET", "/sessions")}[upstream_id]


engine_final = upstream_final


async def test_cap_cancels_upstream_within_a_second_and_tells_the_client(server: ServerHarness) -> None:
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET, "maxDuration": 10})
    assert status == 201, created
    url = created["signalUrl"] + "?token=" + created["clientToken"]
    messages: list[dict] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        while True:
            msg = await ws.receive(timeout=20)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            messages.append(json.loads(msg.data))
            if messages[-1]["type"] == "ended":
                break
    kinds = [m["type"] for m in messages]
    assert "credentials" in kinds
    warnings = [m for m in messages if m["type"] == "warning"]
    assert warnings and warnings[-1]["remainingSeconds"] <= 10
    assert messages[-1] == {"type": "ended", "reason": "cap", "message": messages[-1]["message"]}
    rec = await server.wait_for(created["id"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "cap"
    up = await engine_final(server.control, rec["upstreamId"])
    # the server cancels at endsAt (the engine's own clock starts only when media connects)
    assert up["status"] == "CANCELLED"
    assert -1.0 < ts(up["endedAt"]) - ts(rec["endsAt"]) < 1.0, (up["endedAt"], rec["endsAt"])
    assert ts(rec["endsAt"]) - ts(rec["startedAt"]) == 10


async def test_restart_mid_session_still_caps(runway_server: ServerHarness, engine: EngineHarness) -> None:
    await engine.control("PATCH", "/config", {"honourMaxDuration": False})  # only the server's cap stops it
    status, body = await runway_server.admin("POST", "/v1/sessions/connect",
                                             {"avatarId": "influencer", "maxDuration": 10})
    assert status == 200, body
    rec = await runway_server.wait_for(body["sessionId"], lambda r: r["status"] == "RUNNING")
    await runway_server.stop()  # the server is gone past endsAt
    await asyncio.sleep(max(0.0, ts(rec["endsAt"]) - datetime.now().timestamp()) + 0.5)
    up = await engine_session(engine.control, rec["upstreamId"])
    assert up["status"] == "READY" and up["consumed"]  # still live: nobody enforced it while the server was down
    await runway_server.start()
    rec = await runway_server.wait_for(body["sessionId"], lambda r: r["status"] == "ENDED", timeout=5)
    assert rec["endReason"] == "cap"
    up = await engine_final(engine.control, rec["upstreamId"])
    assert up["status"] == "CANCELLED"


async def test_restart_before_endsat_caps_on_time(runway_server: ServerHarness, engine: EngineHarness) -> None:
    await engine.control("PATCH", "/config", {"honourMaxDuration": False})
    status, body = await runway_server.admin("POST", "/v1/sessions/connect",
                                             {"avatarId": "influencer", "maxDuration": 10})
    assert status == 200, body
    await runway_server.restart()
    rec = await runway_server.wait_for(body["sessionId"], lambda r: r["status"] == "ENDED", timeout=15)
    assert rec["endReason"] == "cap"
    up = await engine_final(engine.control, rec["upstreamId"])
    assert up["status"] == "CANCELLED"
    assert 0 <= ts(up["endedAt"]) - ts(rec["endsAt"]) < 1.0


async def test_upstream_failed_ends_session(server: ServerHarness) -> None:
    await server.control("POST", "/fail-next", {"count": 1, "failureCode": "capacity", "failure": "no GPU"})
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    assert status == 201
    rec = await server.wait_for(created["id"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "upstream_failed"
    assert rec["upstreamStatus"] == "FAILED"
    # connect reports it as an upstream error
    await server.control("POST", "/fail-next", {"count": 1})
    status, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "influencer"})
    assert status == 502 and body["error"]["code"] == "session_upstream_failed"


async def test_provisioning_past_deadline_is_cancelled_upstream(redis_url, data_dir) -> None:
    from avatar_server.engine.config import Delay

    from ..harness import fast_engine_config, make_settings

    settings = make_settings(data_dir, redis_url, provision_timeout=1.5)
    h = await ServerHarness(settings, fast_engine_config(provisioning_delay=Delay("fixed", 30))).start()
    try:
        status, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
        assert status == 201
        rec = await h.wait_for(created["id"], lambda r: r["status"] == "ENDED", timeout=10)
        assert rec["endReason"] == "provision_timeout"
        up = await engine_final(h.control, rec["upstreamId"])
        assert up["status"] == "CANCELLED"
    finally:
        await h.stop_all()


async def test_ready_but_never_picked_up_is_cancelled(redis_url, data_dir) -> None:
    from ..harness import fast_engine_config, make_settings

    h = await ServerHarness(make_settings(data_dir, redis_url, ready_timeout=1.0), fast_engine_config()).start()
    try:
        status, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
        assert status == 201
        rec = await h.wait_for(created["id"], lambda r: r["status"] == "ENDED", timeout=10)
        assert rec["endReason"] == "ready_timeout" and rec["readyAt"] is not None
        up = await engine_final(h.control, rec["upstreamId"])
        assert up["status"] == "CANCELLED"
    finally:
        await h.stop_all()


async def test_vanished_client_is_abandoned_and_cancelled(server: ServerHarness) -> None:
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    url = created["signalUrl"] + "?token=" + created["clientToken"]
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        while json.loads((await ws.receive(timeout=10)).data)["type"] != "credentials":
            pass
    # socket gone; grace is 1 s in tests
    rec = await server.wait_for(created["id"], lambda r: r["status"] == "ENDED", timeout=10)
    assert rec["endReason"] == "abandoned"
    up = await engine_final(server.control, rec["upstreamId"])
    assert up["status"] == "CANCELLED"


async def test_reconnect_within_grace_keeps_session(server: ServerHarness) -> None:
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    url = created["signalUrl"] + "?token=" + created["clientToken"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            while json.loads((await ws.receive(timeout=10)).data)["type"] != "credentials":
                pass
        async with http.ws_connect(url) as ws:
            first = json.loads((await ws.receive(timeout=5)).data)
            assert first["type"] == "status" and first["status"] == "RUNNING"
            again = json.loads((await ws.receive(timeout=5)).data)
            assert again["type"] == "credentials"  # handed again to the same client
            await asyncio.sleep(1.5)  # past the grace period while connected
            status, rec = await server.admin("GET", f"/v1/sessions/{created['id']}")
            assert rec["status"] == "RUNNING"
            await ws.send_str('{"type":"end"}')
            while json.loads((await ws.receive(timeout=5)).data)["type"] != "ended":
                pass


async def test_an_end_published_while_the_bus_was_cut_still_reaches_the_socket(
        server: ServerHarness, redis_url: str, monkeypatch) -> None:
    """Events published while the event bus has lost its Redis subscription are not heard. Here
    the ``ended`` event is lost for sure (its publish is dropped), then the bus's subscription is
    killed in Redis: once subscribed again, the broker re-reads the record and tells the client."""
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    assert status == 201, created
    url = created["signalUrl"] + "?token=" + created["clientToken"]
    bus = server.app[K.SESSIONS].bus
    publish = bus.publish

    async def lossy(session_id: str, event: dict) -> None:
        if event.get("type") != "ended":
            await publish(session_id, event)

    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        while json.loads((await ws.receive(timeout=10)).data)["type"] != "credentials":
            pass
        monkeypatch.setattr(bus, "publish", lossy)
        status, _ = await server.admin("DELETE", f"/v1/sessions/{created['id']}")
        assert status in (200, 204)
        r = client_from_url(redis_url)
        try:
            assert await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        finally:
            await r.aclose()
        frame = json.loads((await ws.receive(timeout=10)).data)
        while frame["type"] != "ended":
            frame = json.loads((await ws.receive(timeout=10)).data)
        assert frame["reason"] == "admin", frame
