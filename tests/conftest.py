"""Shared fixtures: one real ``redis-server`` per test session (flushed before each test),
servers on real ports, and the no-leak invariant checked after every server test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from avatar_server.store.embedded import free_port

from .harness import (
    ENGINE_KEY,
    EngineHarness,
    ServerHarness,
    assert_no_leaks,
    fast_engine_config,
    make_settings,
)
from .leakcheck import leak_guard  # noqa: F401  (autouse: no secret in browser answers, frames or logs)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required for the tests (apt-get install redis-server)")
    tmp = tempfile.mkdtemp(prefix="avatar-test-redis-")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tmp, "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_sync.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis_sync.ConnectionError:
            time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the test redis-server did not start")
    client.close()
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _flush_redis(request: pytest.FixtureRequest) -> None:
    if "redis_url" in request.fixturenames:
        client = redis_sync.Redis.from_url(request.getfixturevalue("redis_url"))
        client.flushall()
        client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """The server on its embedded defaults (local engine mounted at /engine) with a test Redis."""
    h = await ServerHarness(make_settings(data_dir, redis_url), fast_engine_config()).start()
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[EngineHarness]:
    """The engine alone (``avatar-server engine``) on its own port: a stand-in for Runway
    (its avatars and documents in the test Redis, under the engine's own key prefix)."""
    e = await EngineHarness(fast_engine_config(), redis_url=redis_url).start()
    try:
        yield e
    finally:
        await e.stop()


@pytest.fixture
async def runway_server(redis_url: str, data_dir: Path, engine: EngineHarness) -> AsyncIterator[ServerHarness]:
    """The server in Runway mode (RUNWAYML_API_SECRET + RUNWAYML_BASE_URL) against the separate engine."""
    settings = make_settings(data_dir, redis_url, runway_secret=ENGINE_KEY, runway_base_url=engine.base)
    h = await ServerHarness(settings).start()
    try:
        yield h
        await assert_no_leaks(h, engine, engine.control)
    finally:
        await h.stop_all()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("AVATAR_SERVER_LOG_LEVEL", "INFO")
