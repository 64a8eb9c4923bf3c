"""A stalled upstream never holds a deadline or a client's DELETE (issue 10).

Every upstream status read is made to hang 20 s (the engine answers late). Each RUNNING
session's ``check`` timer (1 s in tests) then has a status read in flight; caps must still
fire at ``endsAt`` and cancel upstream at once, and a client's DELETE must answer as soon
as the upstream cancel is done. Provisioning polls are status reads too, so the sessions
are started (``/connect`` answers once the credentials are ready) before the stall.

Lateness is read from the records (the server's ``endedAt`` − ``endsAt``, the engine's own
``endedAt`` for the cancel), not from this test's clock.

The stalls are as short as still shows the fault (a stalled engine handler keeps the
server's shutdown waiting until it answers): longer than the cap is away for the caps,
several times the DELETE bound for the DELETE.

Last, an upstream cancel that hangs past its timer handler's time limit: cut short, it
must leave a retry behind (the no-leak check after each test would find a live session).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from avatar_server.sessions import timers as timers_mod
from avatar_server.sessions.timers import MAX_CHECKS

from ..harness import ServerHarness, upstream_final


def stall_status_reads(seconds: float) -> dict:
    return {"rules": [{"op": "get", "delaySeconds": seconds, "times": 1000}]}


LATE = 1.0  # the contract: a cap fires (and cancels upstream) within 1 s of endsAt


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def connect(server: ServerHarness, max_duration: int) -> dict:
    status, body = await server.admin("POST", "/v1/sessions/connect",
                                      {"avatarId": "influencer", "maxDuration": max_duration})
    assert status == 200, body
    return body


async def stalled_reads(server: ServerHarness) -> int:
    return (await server.control("GET", "/stats"))["faultsInjected"]["get"]


async def test_caps_fire_on_time_while_status_reads_stall(server: ServerHarness) -> None:
    # more RUNNING sessions than the timer loop runs checks at once: its check slots are full
    # and more checks wait for one, and the caps still must not
    started = await asyncio.gather(*(connect(server, 10) for _ in range(MAX_CHECKS + 4)))
    await server.control("POST", "/faults", stall_status_reads(12))  # past every endsAt
    ids = [s["sessionId"] for s in started]
    # the check timers (1 s) start hanging status reads well before the caps are due, as
    # many at once as the loop allows
    deadline = time.monotonic() + 5
    while await stalled_reads(server) < MAX_CHECKS and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await stalled_reads(server) == MAX_CHECKS

    recs = await asyncio.gather(*(server.wait_for(i, lambda r: r["status"] == "ENDED", timeout=20) for i in ids))
    for rec in recs:
        assert rec["endReason"] == "cap", rec
        late = ts(rec["endedAt"]) - ts(rec["endsAt"])
        assert 0 <= late < LATE, (rec["id"], late)
        up = await upstream_final(server.control, rec["upstreamId"])
        assert up["status"] == "CANCELLED", up
        cancel_late = ts(up["endedAt"]) - ts(rec["endsAt"])
        assert cancel_late < LATE, (rec["id"], cancel_late)


async def test_client_delete_answers_once_cancelled_while_status_reads_stall(server: ServerHarness) -> None:
    body = await connect(server, 60)
    sid = body["sessionId"]
    await server.control("POST", "/faults", stall_status_reads(8))
    deadline = time.monotonic() + 5
    while await stalled_reads(server) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the session's check timer has a status read hanging

    t0 = time.monotonic()
    status, rec, _ = await server.call("DELETE", f"/v1/sessions/{sid}", token=body["clientToken"])
    took = time.monotonic() - t0
    assert status == 200, rec
    assert rec["status"] == "ENDED" and rec["endReason"] == "client"
    # generous for a loaded machine: the stall it must not wait for is 8 s
    assert took < 3.0, took
    # the DELETE answered after the upstream cancel, not before
    engine = {s["id"]: s for s in await server.control("GET", "/sessions")}
    assert engine[rec["upstreamId"]]["status"] == "CANCELLED"


async def test_a_cap_whose_upstream_cancel_outlasts_its_handler_is_retried(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the handler's time limit (25 s) made short; the first cancel hangs past it, then fails
    # without cancelling: the cut-short cancel must leave a retry behind, not a live session
    monkeypatch.setattr(timers_mod, "HANDLER_TIMEOUT", 1.0)
    body = await connect(server, 10)
    await server.control("DELETE", "/stats")
    await server.control("POST", "/faults", {"rules": [{"op": "delete", "delaySeconds": 3, "status": 503,
                                                        "times": 1}]})
    rec = await server.wait_for(body["sessionId"], lambda r: r["status"] == "ENDED", timeout=20)
    assert rec["endReason"] == "cap"
    up = await upstream_final(server.control, rec["upstreamId"], timeout=10)
    assert up["status"] == "CANCELLED", up
    assert (await server.control("GET", "/stats"))["requests"]["delete"] >= 2
