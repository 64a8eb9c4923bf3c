"""Over real HTTP against the engine's fault injection: a cancel (DELETE of the upstream session)
answered 500 is retried at once by the upstream client — a cancel is idempotent — so the end
does not fall back to the slower ``cancel`` timer; a create answered 500 is still never resent."""

from __future__ import annotations

import logging

import pytest

from ..harness import ServerHarness


async def _requests(server: ServerHarness) -> dict:
    return (await server.control("GET", "/stats"))["requests"]


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_cancel_answered_500_is_retried(server: ServerHarness, when: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    code, connected = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    assert code == 200, connected
    _, rec = await server.admin("GET", f"/v1/sessions/{connected['sessionId']}")
    await server.control("DELETE", "/stats")
    # before: refused without cancelling; after: cancelled, then answered 500 anyway
    await server.control("POST", "/faults", {"rules": [{"op": "delete", "status": 500, "times": 1, "when": when}]})
    code, ended = await server.admin("DELETE", f"/v1/sessions/{connected['sessionId']}")
    assert code == 200 and ended["endReason"] == "admin", ended
    # the end waited for the cancel: two DELETEs (the 500, then the retry), upstream CANCELLED now
    stats = await server.control("GET", "/stats")
    assert stats["requests"]["delete"] == 2 and stats["faultsInjected"]["delete"] == 1, stats
    ups = {s["id"]: s for s in await server.control("GET", "/sessions")}
    assert ups[rec["upstreamId"]]["status"] == "CANCELLED"
    retries = [r.getMessage() for r in caplog.records if r.name == "avatar_server.upstream"]
    assert any("op=cancel" in m and "status=500" in m for m in retries), retries
    assert not [r for r in caplog.records if "cancel failed" in r.getMessage()]  # no timer fallback


async def test_a_create_answered_500_is_not_retried(server: ServerHarness) -> None:
    await server.control("DELETE", "/stats")
    await server.control("POST", "/faults", {"rules": [{"op": "create", "status": 500, "times": 1}]})
    code, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    assert code >= 500 and body["error"]["code"] != "internal_error", body
    assert (await _requests(server))["create"] == 1
