from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from avatar_server.errors import (
    LimitExceeded,
    NotFound,
    UpstreamAmbiguous,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from avatar_server.runway import RealtimeStatus
from avatar_server.upstream import RetryPolicy, UpstreamClient

SECRET = "key_test_SECRET_do_not_log_0123456789"
SESSION_KEY = "sk_SESSIONKEY_do_not_log"
SID = "3f2b8f8e-8a7b-4c8e-9d2a-0a1b2c3d4e5f"
BASE = "http://upstream.test"
CREATE_BODY = {
    "model": "gwm1_avatars",
    "avatar": {"type": "runway-preset", "presetId": "cat-character"},
    "maxDuration": 120,
}

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A scripted fake upstream: answers each request with the next step (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_client(
    upstream: Upstream,
    sleep: FakeSleep,
    *,
    base_url: str = BASE,
    policy: RetryPolicy | None = None,
    seed: int = 42,
) -> UpstreamClient:
    return UpstreamClient(
        base_url=base_url,
        api_secret=SECRET,
        retry=policy,
        transport=httpx.MockTransport(upstream),
        rng=random.Random(seed),
        sleep=sleep,
    )


def err(status: int, message: str = "nope", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": message}, headers=headers)


def session(status: str = "NOT_READY", **extra: Any) -> httpx.Response:
    return httpx.Response(
        200, json={"id": SID, "createdAt": "2024-11-06T12:00:00.000Z", "status": status, **extra}
    )


def exc(cls: type[httpx.TransportError], text: str = "boom") -> httpx.TransportError:
    return cls(text, request=httpx.Request("GET", BASE))


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


# -- headers, paths, parsing ------------------------------------------------


async def test_get_session_sends_runway_headers_and_parses(sleep: FakeSleep) -> None:
    upstream = Upstream(session("READY", sessionKey=SESSION_KEY, expiresAt="2024-11-06T12:05:00Z", extra=1))
    async with make_client(upstream, sleep) as client:
        got = await client.get_session(SID)
    req = upstream.requests[0]
    assert req.method == "GET" and req.url.path == f"/v1/realtime_sessions/{SID}"
    assert req.headers["Authorization"] == f"Bearer {SECRET}"
    assert req.headers["X-Runway-Version"] == "2024-11-06"
    assert req.headers["X-Request-Id"]
    assert got.status is RealtimeStatus.READY and got.sessionKey == SESSION_KEY and not got.is_terminal
    assert SESSION_KEY not in repr(got) and SESSION_KEY not in str(got)
    assert client.stats == {"total": 1, "get": 1}


@pytest.mark.parametrize("base_url", ["http://engine.test:8080/engine", "http://engine.test:8080/engine/"])
async def test_base_url_with_path_prefix(sleep: FakeSleep, base_url: str) -> None:
    upstream = Upstream(httpx.Response(200, json={"id": SID}))
    async with make_client(upstream, sleep, base_url=base_url) as client:
        assert await client.create_session(CREATE_BODY) == SID
    url = upstream.requests[0].url
    assert (url.host, url.port, url.path) == ("engine.test", 8080, "/engine/v1/realtime_sessions")
    assert json.loads(upstream.requests[0].content) == CREATE_BODY


async def test_upstream_id_cannot_escape_the_sessions_path(sleep: FakeSleep) -> None:
    upstream = Upstream(session())
    async with make_client(upstream, sleep) as client:
        await client.get_session("../avatars/x")
    assert upstream.requests[0].url.raw_path == b"/v1/realtime_sessions/..%2Favatars%2Fx"


async def test_consume_uses_session_key_not_secret(sleep: FakeSleep) -> None:
    upstream = Upstream(
        httpx.Response(200, json={"url": "wss://lk.test", "token": "LKTOKEN", "roomName": "r1"})
    )
    async with make_client(upstream, sleep) as client:
        creds = await client.consume(SID, SESSION_KEY)
    req = upstream.requests[0]
    assert req.method == "POST" and req.url.path == f"/v1/realtime_sessions/{SID}/consume"
    assert req.headers["Authorization"] == f"Bearer {SESSION_KEY}"
    assert SECRET not in str(req.headers)
    assert req.content == b""
    assert (creds.url, creds.token, creds.roomName) == ("wss://lk.test", "LKTOKEN", "r1")
    assert "LKTOKEN" not in repr(creds)


async def test_cancel_true_on_204_false_on_404(sleep: FakeSleep) -> None:
    upstream = Upstream(httpx.Response(204), err(404, "not found"))
    async with make_client(upstream, sleep) as client:
        assert await client.cancel_session(SID) is True
        assert await client.cancel_session(SID) is False
    assert [r.method for r in upstream.requests] == ["DELETE", "DELETE"]
    assert client.stats["cancel"] == 2


async def test_429_retry_after_is_honoured(sleep: FakeSleep, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="avatar_server.upstream")
    upstream = Upstream(err(429, "slow down", {"Retry-After": "2"}), session("RUNNING"))
    async with make_client(upstream, sleep) as client:
        got = await client.get_session(SID)
    assert got.status is RealtimeStatus.RUNNING
    assert len(upstream.requests) == 2 and sleep.delays[0] >= 2.0
    assert upstream.requests[0].headers["X-Request-Id"] == upstream.requests[1].headers["X-Request-Id"]
    retry_logs = [r for r in caplog.records if r.levelno == logging.INFO and "retry" in r.getMessage()]
    assert len(retry_logs) == 1 and "status=429" in retry_logs[0].getMessage()
    assert SECRET not in log_text(caplog)


async def test_503_then_success(sleep: FakeSleep) -> None:
    upstream = Upstream(err(503, "overloaded"), session("NOT_READY", queued=True))
    async with make_client(upstream, sleep) as client:
        got = await client.get_session(SID)
    assert got.queued is True and len(upstream.requests) == 2 and len(sleep.delays) == 1


@pytest.mark.parametrize(
    ("status", "exc_type", "code"),
    [
        (400, UpstreamStatusError, "upstream_rejected"),
        (422, UpstreamStatusError, "upstream_rejected"),
        (401, UpstreamStatusError, "upstream_auth"),
        (403, UpstreamStatusError, "upstream_auth"),
        (404, NotFound, "not_found"),
        (409, UpstreamStatusError, "upstream_conflict"),
    ],
)
async def test_client_errors_are_not_retried_and_are_mapped(
    sleep: FakeSleep, status: int, exc_type: type[Exception], code: str
) -> None:
    upstream = Upstream(err(status, "Invalid thing " + "x" * 1000), session())
    async with make_client(upstream, sleep) as client:
        with pytest.raises(exc_type) as info:
            await client.get_session(SID)
    assert len(upstream.requests) == 1 and sleep.delays == []
    assert info.value.code == code
    assert "Invalid thing" in info.value.message and len(info.value.message) < 400
    assert SECRET not in info.value.message
    if isinstance(info.value, UpstreamStatusError):
        assert info.value.upstream_status == status


async def test_400_issues_are_in_the_message(sleep: FakeSleep) -> None:
    body = {
        "error": "Invalid input",
        "issues": [{"code": "too_big", "path": ["maxDuration"], "message": "<= 1800"}],
    }
    upstream = Upstream(httpx.Response(400, json=body))
    async with make_client(upstream, sleep) as client:
        with pytest.raises(UpstreamStatusError) as info:
            await client.create_session(CREATE_BODY)
    assert "Invalid input" in info.value.message and "maxDuration: <= 1800" in info.value.message


async def test_attempts_are_bounded_then_unavailable(sleep: FakeSleep) -> None:
    upstream = Upstream(err(503, "overloaded"))
    async with make_client(upstream, sleep, policy=RetryPolicy(max_attempts=4)) as client:
        with pytest.raises(UpstreamUnavailable) as info:
            await client.get_session(SID)
    assert len(upstream.requests) == 4 and len(sleep.delays) == 3
    assert "overloaded" in info.value.message


async def test_429_exhausted_is_limit_exceeded_with_retry_after(sleep: FakeSleep) -> None:
    upstream = Upstream(err(429, "quota", {"Retry-After": "1"}))
    async with make_client(upstream, sleep, policy=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(LimitExceeded) as info:
            await client.get_session(SID)
    assert info.value.code == "upstream_rate_limited" and info.value.retry_after == 1.0
    assert info.value.headers["Retry-After"] == "1"
    assert len(upstream.requests) == 3


async def test_retry_after_beyond_budget_gives_up_at_once(sleep: FakeSleep) -> None:
    upstream = Upstream(err(429, "daily quota", {"Retry-After": "45"}), session())
    async with make_client(upstream, sleep, policy=RetryPolicy(max_total=30.0)) as client:
        with pytest.raises(LimitExceeded) as info:
            await client.get_session(SID)
    assert len(upstream.requests) == 1 and sleep.delays == []
    assert info.value.retry_after == 45.0 and info.value.headers["Retry-After"] == "45"


async def test_total_time_budget_bounds_retries(sleep: FakeSleep) -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=1.0, max_delay=1.0, max_total=3.0)
    upstream = Upstream(err(502, "bad gateway"))
    async with make_client(upstream, sleep, policy=policy) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.get_session(SID)
    assert sum(sleep.delays) <= 3.0
    assert len(upstream.requests) == len(sleep.delays) + 1 < 1000


async def test_jittered_delays_within_bounds_and_seeded(sleep: FakeSleep) -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=2.0, max_total=100.0)

    async def run(seed: int) -> list[float]:
        s = FakeSleep()
        async with make_client(Upstream(err(503)), s, policy=policy, seed=seed) as client:
            with pytest.raises(UpstreamUnavailable):
                await client.get_session(SID)
        return s.delays

    first = await run(5)
    assert len(first) == 5
    for n, delay in enumerate(first):
        assert 0.0 <= delay <= min(2.0, 0.5 * 2**n)
    assert await run(5) == first
    assert await run(6) != first


async def test_timeouts_on_get_are_retried_then_upstream_timeout(sleep: FakeSleep) -> None:
    upstream = Upstream(exc(httpx.ReadTimeout))
    async with make_client(upstream, sleep, policy=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(UpstreamTimeout) as info:
            await client.get_session(SID)
    assert not isinstance(info.value, UpstreamAmbiguous)
    assert len(upstream.requests) == 3


async def test_cancel_retries_dropped_connection(sleep: FakeSleep) -> None:
    upstream = Upstream(exc(httpx.RemoteProtocolError), httpx.Response(204))
    async with make_client(upstream, sleep) as client:
        assert await client.cancel_session(SID) is True
    assert len(upstream.requests) == 2


# -- non-idempotent: create and consume ---------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        exc(httpx.ReadTimeout),
        exc(httpx.RemoteProtocolError),
        exc(httpx.WriteTimeout),
        err(502),
        err(504),
        err(500),
    ],
    ids=["read-timeout", "dropped", "write-timeout", "502", "504", "500"],
)
async def test_create_is_not_retried_when_outcome_is_ambiguous(
    sleep: FakeSleep, caplog: pytest.LogCaptureFixture, failure: Step
) -> None:
    caplog.set_level(logging.INFO, logger="avatar_server.upstream")
    upstream = Upstream(failure, httpx.Response(200, json={"id": SID}))
    async with make_client(upstream, sleep) as client:
        with pytest.raises(UpstreamAmbiguous) as info:
            await client.create_session(CREATE_BODY)
    assert len(upstream.requests) == 1 and sleep.delays == []
    request_id = upstream.requests[0].headers["X-Request-Id"]
    assert request_id in info.value.message
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "avatar_server.upstream"
    line = warnings[0].getMessage()
    assert "op=create" in line and request_id in line and "at=20" in line
    assert "cat-character" in line and "maxDuration=120" in line
    assert SECRET not in log_text(caplog)


async def test_create_retried_after_connect_error_and_429(sleep: FakeSleep) -> None:
    upstream = Upstream(
        exc(httpx.ConnectError, "connection refused"),
        exc(httpx.ConnectTimeout),
        err(429, "busy", {"Retry-After": "1"}),
        err(503, "busy"),
        httpx.Response(200, json={"id": SID}),
    )
    policy = RetryPolicy(max_attempts=5)
    async with make_client(upstream, sleep, policy=policy) as client:
        assert await client.create_session(CREATE_BODY) == SID
    assert len(upstream.requests) == 5 and len(sleep.delays) == 4 and sleep.delays[2] >= 1.0
    assert client.stats["create"] == 5


async def test_create_unreadable_200_is_ambiguous(sleep: FakeSleep, caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream(httpx.Response(200, content=b"<html>"))
    async with make_client(upstream, sleep) as client:
        with pytest.raises(UpstreamAmbiguous):
            await client.create_session(CREATE_BODY)
    assert len(upstream.requests) == 1
    assert any("op=create" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_consume_timeout_is_ambiguous_and_not_retried(
    sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = Upstream(
        exc(httpx.ReadTimeout), httpx.Response(200, json={"url": "u", "token": "t", "roomName": "r"})
    )
    async with make_client(upstream, sleep) as client:
        with pytest.raises(UpstreamAmbiguous):
            await client.consume(SID, SESSION_KEY)
    assert len(upstream.requests) == 1
    text = log_text(caplog)
    assert "op=consume" in text and SID in text
    assert SESSION_KEY not in text and SECRET not in text


async def test_consume_retried_on_refusal_and_refused_key_mapped(sleep: FakeSleep) -> None:
    creds = httpx.Response(200, json={"url": "u", "token": "t", "roomName": "r"})
    upstream = Upstream(err(503), creds)
    async with make_client(upstream, sleep) as client:
        assert (await client.consume(SID, SESSION_KEY)).roomName == "r"
        upstream.steps = [err(401, "session key already used")]
        with pytest.raises(UpstreamStatusError) as info:
            await client.consume(SID, SESSION_KEY)
    assert info.value.code == "upstream_consume_refused"
    assert len(upstream.requests) == 3


# -- ping and lifecycle -------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "healthy"),
    [(err(404), True), (err(401), True), (err(503), False), (exc(httpx.ConnectError), False)],
)
async def test_ping(sleep: FakeSleep, step: Step, healthy: bool) -> None:
    upstream = Upstream(step)
    async with make_client(upstream, sleep) as client:
        assert await client.ping() is healthy
    assert len(upstream.requests) == 1 and sleep.delays == []
    assert upstream.requests[0].headers["X-Runway-Version"] == "2024-11-06"


async def test_close_twice_then_use_raises(sleep: FakeSleep) -> None:
    client = make_client(Upstream(session()), sleep)
    await client.close()
    await client.close()
    assert client.closed
    with pytest.raises(RuntimeError):
        await client.get_session(SID)
    with pytest.raises(RuntimeError):
        await client.ping()
    assert SECRET not in repr(client)


# -- real HTTP ----------------------------------------------------------------


async def test_against_a_real_aiohttp_server(aiohttp_server: Any) -> None:
    seen: list[dict[str, str]] = []

    async def get_session(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if len(seen) == 1:
            return web.json_response({"error": "warming up"}, status=503, headers={"Retry-After": "0"})
        return web.json_response(
            {
                "id": request.match_info["id"],
                "createdAt": "2024-11-06T12:00:00Z",
                "status": "COMPLETED",
                "duration": 42,
            }
        )

    app = web.Application()
    app.router.add_get("/engine/v1/realtime_sessions/{id}", get_session)
    server = await aiohttp_server(app)
    sleep = FakeSleep()
    client = UpstreamClient(
        base_url=str(server.make_url("/engine")), api_secret=SECRET, rng=random.Random(1), sleep=sleep
    )
    try:
        got = await client.get_session(SID)
    finally:
        await client.close()
    assert got.status is RealtimeStatus.COMPLETED and got.duration == 42 and got.is_terminal
    assert len(seen) == 2 and len(sleep.delays) == 1
    assert all(
        h["Authorization"] == f"Bearer {SECRET}" and h["X-Runway-Version"] == "2024-11-06" for h in seen
    )


async def test_a_token_that_went_stale_waiting_for_a_connection_is_replaced(aiohttp_server: Any) -> None:
    """One connection, an upstream that takes 0.3 s: the second and third requests wait for the
    connection longer than a token stays fresh, so each takes a new token before it leaves (else
    they would all leave late, together, and a second could hold more than the budget)."""
    arrivals: list[float] = []

    async def get_session(request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.3)
        return web.json_response({"id": request.match_info["id"], "status": "NOT_READY", "queued": False})

    app = web.Application()
    app.router.add_get("/v1/realtime_sessions/{id}", get_session)
    server = await aiohttp_server(app)
    tokens: list[float] = []

    async def gate(op: str) -> None:
        tokens.append(asyncio.get_running_loop().time())

    client = UpstreamClient(base_url=str(server.make_url("")), api_secret=SECRET, gate=gate, max_connections=1)
    try:
        answers = await asyncio.gather(*(client.get_session(SID) for _ in range(3)))
    finally:
        await client.close()
    assert [a.status for a in answers] == [RealtimeStatus.NOT_READY] * 3
    assert client.stale_tokens == 2 and len(tokens) == 5
    # the replacement tokens were taken once the connection was free, after the first answer
    assert len(arrivals) == 3 and sorted(tokens)[3] > arrivals[0]


async def test_a_token_bought_in_bulk_counts_from_when_it_was_bought(sleep: FakeSleep) -> None:
    """The poll scheduler buys tokens for a round at once; a poll that starts late (a busy loop)
    takes a fresh token instead of leaving on a stale one, and a fresh one is used as it is."""
    tokens: list[str] = []

    async def gate(op: str) -> None:
        tokens.append(op)

    client = UpstreamClient(base_url=BASE, api_secret=SECRET, transport=httpx.MockTransport(Upstream(session())),
                            gate=gate, sleep=sleep)
    try:
        await client.get_session(SID, prepaid_at=time.monotonic())
        assert tokens == [] and client.stale_tokens == 0
        await client.get_session(SID, prepaid_at=time.monotonic() - 0.3)
        assert tokens == ["get"] and client.stale_tokens == 1
    finally:
        await client.close()


async def test_real_connection_refused_is_retried_for_create() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = FakeSleep()
    client = UpstreamClient(
        base_url=f"http://127.0.0.1:{port}", api_secret=SECRET, retry=RetryPolicy(max_attempts=3), sleep=sleep
    )
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await client.create_session(CREATE_BODY)
    finally:
        await client.close()
    assert not isinstance(info.value, UpstreamAmbiguous)
    assert client.stats["create"] == 3 and len(sleep.delays) == 2


async def test_real_read_timeout_on_create_is_ambiguous(aiohttp_server: Any) -> None:
    calls = 0

    async def slow_create(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)
        return web.json_response({"id": SID})

    app = web.Application()
    app.router.add_post("/v1/realtime_sessions", slow_create)
    server = await aiohttp_server(app)
    client = UpstreamClient(
        base_url=str(server.make_url("/")), api_secret=SECRET, read_timeout=0.2, sleep=FakeSleep()
    )
    try:
        with pytest.raises(UpstreamAmbiguous):
            await client.create_session(CREATE_BODY)
    finally:
        await client.close()
    assert calls == 1 and client.stats["create"] == 1
