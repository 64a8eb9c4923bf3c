"""A browser's whole journey in both modes, under the leak guard (tests/leakcheck.py), which must
have seen the secrets it checks for — and which does catch a planted leak."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from ..harness import ADMIN_TOKEN, ServerHarness
from ..leakcheck import LeakGuard

ORIGIN = "https://shop.example.com"


async def _journey(server: ServerHarness, guard: LeakGuard) -> None:
    status, site = await server.admin("POST", "/v1/sites", {"name": "s", "allowedOrigins": [ORIGIN],
                                                            "avatarIds": ["cooking-teacher"],
                                                            "maxConcurrentSessions": 5})
    assert status == 201
    pk = site["publishableKey"]
    browser = {"Origin": ORIGIN}
    status, connected, _ = await server.call("POST", "/v1/sessions/connect", token=pk, headers=browser,
                                             json_body={"avatarId": "cooking-teacher"})
    assert status == 200, connected
    ct = connected["clientToken"]
    status, rec, _ = await server.call("GET", f"/v1/sessions/{connected['sessionId']}", token=ct, headers=browser)
    assert status == 200
    status, created, _ = await server.call("POST", "/v1/sessions", token=pk, headers=browser,
                                           json_body={"avatar": {"type": "runway-preset",
                                                                 "presetId": "cooking-teacher"}})
    assert status == 201
    url = created["signalUrl"] + "?token=" + created["clientToken"]
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=browser) as ws:
        kinds = []
        while True:
            msg = json.loads((await ws.receive(timeout=10)).data)
            kinds.append(msg["type"])
            if msg["type"] == "credentials":
                await ws.send_str(json.dumps({"type": "end"}))
            if msg["type"] == "ended":
                break
    assert "credentials" in kinds
    status, _, _ = await server.call("DELETE", f"/v1/sessions/{connected['sessionId']}", token=ct, headers=browser)
    assert status == 200
    # the guard saw both sessions' key and media credential, so its checks were not vacuous
    assert len(guard.upstream) >= 4, "the leak guard learned no upstream secrets"
    assert guard.answers and guard.frames
    # both media credentials were seen in their places, each checked against its session
    assert set(guard.handed.values()) == {connected["sessionId"], created["id"]}, guard.handed


async def test_browser_journey_engine_mode(server: ServerHarness, leak_guard: LeakGuard,
                                           caplog: pytest.LogCaptureFixture) -> None:
    await _journey(server, leak_guard)
    # the guard reads the server's own log lines (not an empty capture)
    names = {r.name for r in caplog.get_records("call")}
    assert "avatar_server.http" in names and names & {"avatar_server.sessions", "avatar_server.provisioner",
                                                      "avatar_server.signal"}, names


async def test_browser_journey_runway_mode(runway_server: ServerHarness, leak_guard: LeakGuard) -> None:
    await _journey(runway_server, leak_guard)


def test_guard_catches_planted_leaks() -> None:
    guard = LeakGuard()
    guard.add_secret("sessionkey-abcdef123456")
    guard.answers.append(("GET /v1/sessions/x → 200", {"x": ADMIN_TOKEN}))
    guard.frames.append(("frame", {"type": "status", "note": "sessionkey-abcdef123456"}))
    guard.media_tokens.add("media-token-123")
    guard.record_frame("ws://h/v1/sessions/x/signal", json.dumps({"type": "credentials", "token": "media-token-123"}))
    # the same media credential on another session's socket, and a session key in the token's place
    guard.record_frame("ws://h/v1/sessions/y/signal", json.dumps({"type": "credentials", "token": "media-token-123"}))
    guard.record_frame("ws://h/v1/sessions/z/signal",
                       json.dumps({"type": "credentials", "token": "sessionkey-abcdef123456"}))
    record = logging.LogRecord("avatar_server.test", logging.INFO, __file__, 1, "plain", None, None)
    record.detail = "sessionkey-abcdef123456"
    problems = guard.problems([record])
    assert any("admin token" in p for p in problems)
    assert any(p.startswith("frame") and "holds" in p for p in problems)
    assert any(p.startswith("log line") for p in problems)
    assert any("handed for session y" in p for p in problems)
    assert any("/z/signal" in p and "not a media credential" in p for p in problems)
    assert len(problems) == 5, problems
