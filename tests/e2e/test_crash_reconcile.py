"""Creates whose answer is lost leak nothing: the create journal and its reconciliation.

(a) the server (a real process, Runway mode, against the engine alone) is killed with
    SIGKILL while 20 creates are in flight; the restarted server finds the 20 upstream
    sessions they made and cancels them — one decision line each;
(b) an ambiguous create (the answer comes after the upstream timeout, or a 502) is adopted
    when it is the only match, cancelled when it cannot be told apart, cancelled when it lands
    upstream only after the server gave up, and found by a later sweep when the upstream's
    list fails at first;
(c) a create still in flight on a live instance is never taken for a lost one.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from avatar_server import appkeys as K
from avatar_server.store.connection import client_from_url
from avatar_server.store.embedded import free_port
from avatar_server.store.journal import CreateIntent, CreateJournal

from ..harness import (
    ADMIN_TOKEN,
    ENGINE_KEY,
    TERMINAL,
    EngineHarness,
    Http,
    ServerHarness,
    assert_no_leaks,
    make_settings,
)
from .cli_helpers import clean_env

PRESET = {"type": "runway-preset", "presetId": "tennis-coach"}
DECISION = re.compile(r"create reconciled: (adopted|cancelled|nothing found)\b.*?for session ([0-9a-f-]{36})")


class ServerProcess(Http):
    """``python -m avatar_server`` in Runway mode against ``engine``; its log goes to a file."""

    def __init__(self, tmp: Path, redis_url: str, engine: EngineHarness, **env: str) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.env = clean_env(
            tmp / "data", AVATAR_SERVER_PORT=str(self.port), AVATAR_SERVER_ADMIN_TOKEN=ADMIN_TOKEN,
            RUNWAYML_API_SECRET=ENGINE_KEY, RUNWAYML_BASE_URL=engine.base, REDIS_URL=redis_url,
            AVATAR_SERVER_LOG_LEVEL="INFO", **env,
        )
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = tmp

    async def start(self) -> None:
        log = self.tmp / f"server-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "avatar_server"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if (await self.call("GET", "/readyz"))[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("the server did not start:\n" + log.read_text())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self, index: int = -1) -> str:
        return self.logs[index].read_text(errors="replace")

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, data, _ = await self.call(method, path, token=ADMIN_TOKEN, json_body=body)
        return status, data


def decisions(text: str) -> Counter[str]:
    return Counter(m.group(2) for m in DECISION.finditer(text))


async def engine_sessions(engine: EngineHarness) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in await engine.control("GET", "/sessions")}


async def eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s")


# -- (a) a crash with 20 creates in flight -------------------------------------------------------


async def test_crash_with_creates_in_flight_cancels_what_they_made(
    tmp_path: Path, redis_url: str, engine: EngineHarness
) -> None:
    # the upstream's concurrency is set: with it unknown, only a probe window of starts would go
    # upstream before the first answers, and this test needs all 20 creates in flight at once
    server = ServerProcess(tmp_path, redis_url, engine, AVATAR_SERVER_LEASE_SECONDS="2",
                           AVATAR_SERVER_UPSTREAM_TIMEOUT_SECONDS="10", AVATAR_SERVER_UPSTREAM_CONCURRENCY="100")
    await server.start()
    try:
        await engine.control("POST", "/faults", {"rules": [
            {"op": "create", "delaySeconds": 3, "when": "after", "times": 20}]})
        started = time.monotonic()
        answers = await asyncio.gather(*(server.admin("POST", "/v1/sessions", {"avatar": PRESET})
                                         for _ in range(20)))
        assert all(code == 201 for code, _ in answers), answers
        ids = [body["id"] for _, body in answers]
        # every create reached the engine (and made a session there); no answer came back yet
        await eventually(lambda: _count(engine, 20), 5, "20 upstream sessions")
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
        assert time.monotonic() - started < 3.0, "the creates' answers may have arrived: too slow to kill"
        server.kill()

        await server.start()

        async def all_cancelled() -> bool:
            ups = await engine_sessions(engine)
            return len(ups) == 20 and all(s["status"] == "CANCELLED" for s in ups.values())

        async def all_ended() -> bool:
            records = [(await server.admin("GET", f"/v1/sessions/{sid}"))[1] for sid in ids]
            return all(r["status"] == "ENDED" for r in records)

        await eventually(all_cancelled, 20, "every upstream session CANCELLED")
        await eventually(all_ended, 20, "every server session ENDED")
        for sid in ids:
            rec = (await server.admin("GET", f"/v1/sessions/{sid}"))[1]
            assert rec["endReason"] == "error" and rec["upstreamId"] is None, rec
        log = server.log()
        assert decisions(log) == Counter({sid: 1 for sid in ids}), log[-4000:]
        assert "create reconciled: cancelled" in log and ADMIN_TOKEN not in log and ENGINE_KEY not in log
        await assert_no_leaks(server, engine, engine.control)  # type: ignore[arg-type]
    finally:
        server.stop()
        await server.close()


async def _count(engine: EngineHarness, n: int) -> bool:
    return len(await engine.control("GET", "/sessions")) >= n


# -- (b) ambiguous creates ---------------------------------------------------------------------


@pytest.fixture
async def ambiguous_server(redis_url: str, data_dir: Path, engine: EngineHarness) -> Any:
    """Runway mode against the engine, with a 1 s upstream timeout (creates stalled 3 s are ambiguous)
    and a 2 s lease (the journal's sweep every 2 s)."""
    settings = make_settings(data_dir, redis_url, runway_secret=ENGINE_KEY, runway_base_url=engine.base,
                             upstream_timeout=1.0, lease_seconds=2.0)
    h = await ServerHarness(settings).start()
    try:
        yield h
        await assert_no_leaks(h, engine, engine.control)
    finally:
        await h.stop_all()


async def test_ambiguous_create_with_one_match_is_adopted(
    ambiguous_server: ServerHarness, engine: EngineHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = ambiguous_server
    await engine.control("POST", "/faults", {"rules": [{"op": "create", "delaySeconds": 3, "when": "after"}]})
    code, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
    assert code == 201
    rec = await h.wait_for(created["id"], lambda r: r["status"] == "READY", timeout=10)
    ups = await engine_sessions(engine)
    assert list(ups) == [rec["upstreamId"]]  # one create, its session adopted
    assert decisions(caplog.text) == Counter({created["id"]: 1})
    assert "create reconciled: adopted" in caplog.text
    assert await _journal_size(h) == 0
    await h.admin("DELETE", f"/v1/sessions/{created['id']}")
    await eventually(lambda: _status_is(engine, rec["upstreamId"], "CANCELLED"), 5, "cancelled")


async def test_ambiguous_creates_that_cannot_be_told_apart_are_cancelled(
    ambiguous_server: ServerHarness, engine: EngineHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = ambiguous_server
    await engine.control("POST", "/faults", {"rules": [
        {"op": "create", "delaySeconds": 3, "when": "after", "times": 2}]})
    answers = await asyncio.gather(*(h.admin("POST", "/v1/sessions", {"avatar": PRESET}) for _ in range(2)))
    ids = [body["id"] for _, body in answers]
    for sid in ids:
        rec = await h.wait_for(sid, lambda r: r["status"] == "ENDED", timeout=10)
        assert rec["endReason"] == "error" and rec["upstreamId"] is None
    ups = await eventually(lambda: _all_terminal(engine, 2), 10, "both upstream sessions terminal")
    assert all(s["status"] == "CANCELLED" for s in ups.values())
    assert decisions(caplog.text) == Counter({sid: 1 for sid in ids}), caplog.text


async def test_a_create_landing_after_the_server_gave_up_is_cancelled(
    ambiguous_server: ServerHarness, engine: EngineHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = ambiguous_server
    # a gateway answers 502: ambiguous (it may have forwarded the create), and nothing is there yet
    await engine.control("POST", "/faults", {"rules": [{"op": "create", "status": 502, "when": "before"}]})
    code, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
    rec = await h.wait_for(created["id"], lambda r: r["status"] == "ENDED", timeout=10)
    assert rec["endReason"] == "error" and not await engine_sessions(engine)
    assert "create reconciled: nothing found" in caplog.text
    # ...then the forwarded create lands upstream after all: the journal's sweep still watches
    status, made, _ = await engine.call("POST", "/v1/realtime_sessions", token=engine.key,
                                        json_body={"model": "gwm1_avatars", "avatar": PRESET},
                                        headers={"X-Runway-Version": "2024-11-06"})
    assert status == 200, made
    await eventually(lambda: _status_is(engine, made["id"], "CANCELLED"), 10, "the late upstream session cancelled")
    assert "create reconciled: cancelled" in caplog.text
    assert decisions(caplog.text)[created["id"]] == 2  # nothing at first, then the late one


async def test_when_the_upstream_list_fails_the_sweep_tries_again(
    ambiguous_server: ServerHarness, engine: EngineHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = ambiguous_server
    await engine.control("POST", "/faults", {"rules": [
        {"op": "conversation_list", "status": 503, "times": 1000},
        {"op": "create", "delaySeconds": 3, "when": "after"}]})
    code, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
    rec = await h.wait_for(created["id"], lambda r: r["status"] == "ENDED", timeout=15)
    assert rec["endReason"] == "error" and decisions(caplog.text) == Counter()
    (up,) = (await engine_sessions(engine)).values()
    assert up["status"] not in TERMINAL  # not found yet: the list keeps failing
    await engine.control("DELETE", "/faults")
    await eventually(lambda: _status_is(engine, up["id"], "CANCELLED"), 10, "the upstream session cancelled")
    assert decisions(caplog.text) == Counter({created["id"]: 1})


# -- (c) a create in flight on a live instance is not a lost one ----------------------------------


async def test_a_live_create_is_not_taken_for_a_lost_one(
    runway_server: ServerHarness, engine: EngineHarness, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = runway_server
    # a lost create of another (dead) instance, same avatar, a moment ago
    lost = CreateIntent(id="lost-1", sessionId="00000000-0000-4000-8000-000000000001", avatar=PRESET,
                        maxDuration=300, at=time.time(), instance="dead-instance")
    r = client_from_url(redis_url)
    try:
        await CreateJournal(r).record(lost)
    finally:
        await r.aclose()
    # our own create, in flight for 2 s (the engine has made its session; the answer is late)
    await engine.control("POST", "/faults", {"rules": [{"op": "create", "delaySeconds": 2, "when": "after"}]})
    code, created = await h.admin("POST", "/v1/sessions", {"avatar": PRESET})
    await eventually(lambda: _count(engine, 1), 5, "the upstream session")
    assert h.app is not None
    reconciler = h.app[K.SESSIONS].reconciler
    await reconciler.reconcile_once()  # the lost create matches our in-flight one's session: held
    (up,) = (await engine_sessions(engine)).values()
    assert up["status"] not in TERMINAL
    rec = await h.wait_for(created["id"], lambda r: r["status"] == "READY", timeout=10)
    assert rec["upstreamId"] == up["id"]
    await reconciler.reconcile_once()  # now it is owned: the lost create found nothing
    assert (await engine_sessions(engine))[up["id"]]["status"] not in TERMINAL
    assert "create reconciled: nothing found" in caplog.text
    assert decisions(caplog.text) == Counter({lost.sessionId: 1})
    await h.admin("DELETE", f"/v1/sessions/{created['id']}")


async def _journal_size(h: ServerHarness) -> int:
    assert h.app is not None
    return len(await h.app[K.SESSIONS].reconciler.journal.all())


async def _status_is(engine: EngineHarness, upstream_id: str, status: str) -> bool:
    return (await engine_sessions(engine))[upstream_id]["status"] == status


async def _all_terminal(engine: EngineHarness, n: int) -> dict[str, dict[str, Any]] | None:
    ups = await engine_sessions(engine)
    return ups if len(ups) == n and all(s["status"] in TERMINAL for s in ups.values()) else None
