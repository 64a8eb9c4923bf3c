"""Property-based fuzzing (schemathesis) of the live server against its own /openapi.json: no 5xx,
and answers conform to the documented schemas. Bounded examples per operation.

The server runs on its own event loop in a thread, because schemathesis and hypothesis drive
synchronous HTTP calls from this (synchronous) test."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ..harness import ServerHarness, fast_engine_config, make_settings

MAX_EXAMPLES = 20
POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_schema_conformance]
NEGATIVE_CHECKS = [not_a_server_error]
SKIP = {("GET", "/v1/sessions/{id}/signal")}  # a WebSocket upgrade, exercised in the session tests


class ThreadedServer:
    def __init__(self, redis_url: str, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self.thread.start()
        self.settings = make_settings(data_dir, redis_url)
        self.h: ServerHarness = self.run(self._start())

    async def _start(self) -> ServerHarness:
        return await ServerHarness(self.settings, fast_engine_config()).start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        try:
            self.run(self.h.stop_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def live(redis_url: str, data_dir: Path) -> Iterator[ThreadedServer]:
    s = ThreadedServer(redis_url, data_dir)
    try:
        yield s
    finally:
        s.close()


def _fuzz(live: ThreadedServer, credentials: dict[str, dict[str, str]], *, positive_checks: list[Any],
          examples: int) -> tuple[int, Counter[int]]:
    """Every operation, in both generation modes, with each set of headers; asserts no failure.
    Returns how many properties ran and the status codes seen."""
    base = live.h.base
    spec = requests.get(base + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    http = requests.Session()
    failures: list[str] = []
    ran = 0
    calls: Counter[int] = Counter()
    try:
        for result in schema.get_all_operations():
            op = result.ok()
            if (op.method.upper(), op.path) in SKIP:
                continue
            for name, headers in credentials.items():
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    # valid input: no 5xx (and, for the admin, answers as documented); invalid input: no 5xx
                    checks = positive_checks if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS
                    check = _property(op, mode, checks, base, http, headers, calls, examples)
                    try:
                        check()
                        ran += 1
                    except Unsatisfiable:
                        assert mode is GenerationMode.NEGATIVE, op.path  # nothing to get wrong (no inputs)
                    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every failure
                        failures.append(f"{op.method.upper()} {op.path} as {name} ({mode.value}): "
                                        f"{str(exc)[:2000]}")
    finally:
        http.close()
        live.run(_end_all(live.h))
    assert not failures, "\n\n".join(failures)
    return ran, calls


def test_fuzz_no_server_errors(live: ThreadedServer) -> None:
    admin = {"Authorization": f"Bearer {live.settings.admin_token}"}
    ran, calls = _fuzz(live, {"admin": admin}, positive_checks=POSITIVE_CHECKS, examples=MAX_EXAMPLES)
    print("fuzzed operations:", ran, "calls:", calls)
    assert ran >= 20


def _property(op: Any, mode: GenerationMode, checks: list[Any], base: str, http: requests.Session,
              headers: dict[str, str], calls: Counter[int], examples: int) -> Any:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=base, session=http, headers=headers, timeout=30)
        calls[response.status_code] += 1
        case.validate_response(response, checks=checks)

    return check


async def _end_all(h: ServerHarness) -> None:
    while True:
        _, page = await h.admin("GET", "/v1/sessions?status=active&limit=100")
        if not page["data"]:
            return
        for rec in page["data"]:
            await h.admin("DELETE", f"/v1/sessions/{rec['id']}")


def test_fuzz_with_browser_credentials_no_server_errors(live: ThreadedServer) -> None:
    """The same operations with what a browser or a stranger holds — nothing, a publishable key
    from an allowed origin, a made-up client token: refusals, never a 5xx."""
    origin = "https://shop.example.com"
    status, site = live.run(live.h.admin("POST", "/v1/sites", {
        "name": "fuzz", "allowedOrigins": [origin], "avatarIds": ["cooking-teacher"], "maxConcurrentSessions": 3}))
    assert status == 201, site
    credentials = {
        "none": {},
        "publishable": {"Authorization": f"Bearer {site['publishableKey']}", "Origin": origin},
        "client": {"Authorization": "Bearer ct_" + "x" * 43, "Origin": origin},
    }
    _, calls = _fuzz(live, credentials, positive_checks=NEGATIVE_CHECKS, examples=5)
    assert not any(code >= 500 for code in calls) and calls[401] + calls[403] > 0, calls
