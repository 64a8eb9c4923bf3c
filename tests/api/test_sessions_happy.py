"""Happy paths through both endpoints and the signal WebSocket, engine mode and Runway mode."""

from __future__ import annotations

import json

import aiohttp

from ..harness import ServerHarness, assert_no_leaks, make_settings

PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}


async def test_connect_returns_credentials_runway_sdk_shape(server: ServerHarness) -> None:
    status, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    assert status == 200, body
    assert set(body) == {"sessionId", "serverUrl", "token", "roomName", "transport", "clientToken",
                         "signalUrl", "endsAt", "iceServers"}
    assert body["transport"] == "webrtc" and body["iceServers"] == []  # none configured: host candidates
    assert body["serverUrl"].startswith(server.base + "/engine/v1/rtc/")
    record = await server.wait_for(body["sessionId"], lambda r: r["status"] == "RUNNING")
    assert record["endsAt"] == body["endsAt"]
    assert record["maxDuration"] == 300
    # the record shown to a client never carries a credential
    flat = json.dumps(record)
    assert body["token"] not in flat and body["clientToken"] not in flat
    engine = {s["id"]: s for s in await server.control("GET", "/sessions")}
    assert engine[record["upstreamId"]]["consumed"] is True


async def test_create_then_signal_socket_delivers_and_client_ends(server: ServerHarness) -> None:
    status, created = await server.admin("POST", "/v1/sessions", {"avatar": PRESET, "maxDuration": 60})
    assert status == 201, created
    assert created["status"] == "PROVISIONING" and created["maxDuration"] == 60
    assert created["clientToken"].startswith("ct_")
    url = created["signalUrl"] + "?token=" + created["clientToken"]
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        seen = []
        creds = None
        while creds is None:
            msg = json.loads((await ws.receive(timeout=10)).data)
            seen.append(msg["type"])
            if msg["type"] == "credentials":
                creds = msg
        assert seen[0] == "status"
        assert creds["transport"] == "webrtc" and creds["token"] and creds["roomName"]
        rec = await server.wait_for(created["id"], lambda r: r["status"] == "RUNNING",
                                    token=created["clientToken"])
        assert rec["startedAt"] and rec["endsAt"]
        await ws.send_str(json.dumps({"type": "ping"}))
        while (msg := json.loads((await ws.receive(timeout=5)).data))["type"] != "pong":
            pass
        await ws.send_str(json.dumps({"type": "end"}))
        while (msg := json.loads((await ws.receive(timeout=5)).data))["type"] != "ended":
            pass
        assert msg["reason"] == "client"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    rec = await server.wait_for(created["id"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client"
    engine = {s["id"]: s for s in await server.control("GET", "/sessions")}
    assert engine[rec["upstreamId"]]["status"] == "CANCELLED"


async def test_runway_mode_against_separate_engine(runway_server: ServerHarness, engine) -> None:
    status, body = await runway_server.admin("POST", "/v1/sessions/connect", {"avatarId": "tennis-coach"})
    assert status == 200, body
    assert body["serverUrl"].startswith(engine.base)
    rec = await runway_server.wait_for(body["sessionId"], lambda r: r["status"] == "RUNNING")
    ups = {s["id"]: s for s in await engine.control("GET", "/sessions")}
    # consumed by the server; READY until a client's media connects (as Runway's)
    assert ups[rec["upstreamId"]]["status"] == "READY" and ups[rec["upstreamId"]]["consumed"]
    status, ended = await runway_server.admin("DELETE", f"/v1/sessions/{body['sessionId']}")
    assert status == 200 and ended["endReason"] == "admin"
    ups = {s["id"]: s for s in await engine.control("GET", "/sessions")}
    assert ups[rec["upstreamId"]]["status"] == "CANCELLED"
    # idempotent
    status, again = await runway_server.admin("DELETE", f"/v1/sessions/{body['sessionId']}")
    assert status == 200 and again["endReason"] == "admin"


async def test_configured_ice_servers_reach_the_browser(redis_url, data_dir) -> None:
    ice = ({"urls": "turn:turn.example.com:3478", "username": "u", "credential": "c"},)
    h = await ServerHarness(make_settings(data_dir, redis_url, ice_servers=ice)).start()
    try:
        status, body = await h.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
        assert status == 200 and body["iceServers"] == list(ice)
        await h.admin("DELETE", f"/v1/sessions/{body['sessionId']}")
        status, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
        assert status == 201
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(created["signalUrl"] + "?token=" + created["clientToken"]) as ws:
            while (msg := json.loads((await ws.receive(timeout=10)).data))["type"] != "credentials":
                pass
            assert msg["iceServers"] == list(ice)
            await ws.send_str(json.dumps({"type": "end"}))
            while json.loads((await ws.receive(timeout=5)).data)["type"] != "ended":
                pass
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def test_connect_names_one_public_base_url_whatever_host_the_caller_used(server: ServerHarness) -> None:
    """A caller that reached the server as ``localhost`` gets the same base in every URL of the answer
    (the signal socket and the media URL), not a mix of ``localhost`` and ``127.0.0.1``."""
    port = server.settings.port
    status, body, _ = await server.call("POST", "/v1/sessions/connect", token=server.settings.admin_token,
                                        json_body={"avatarId": "cooking-teacher"},
                                        headers={"Host": f"localhost:{port}"})
    assert status == 200, body
    assert body["signalUrl"].startswith(f"ws://127.0.0.1:{port}/v1/sessions/"), body["signalUrl"]
    assert body["serverUrl"].startswith(f"http://127.0.0.1:{port}/engine/"), body["serverUrl"]
    await server.admin("DELETE", f"/v1/sessions/{body['sessionId']}")
