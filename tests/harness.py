"""Test harness: real servers on real ports, over real HTTP.

``ServerHarness`` runs ``create_app(settings)`` on a free loopback port (engine mode:
the engine is mounted in the same process, as in production defaults; Runway mode:
pointed at an ``EngineHarness`` running the engine alone). Nothing is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from avatar_server.app import create_app
from avatar_server.engine import create_engine_app
from avatar_server.engine.config import Delay, EngineConfig
from avatar_server.engine.store import EngineCatalogStore
from avatar_server.settings import Settings
from avatar_server.store.connection import client_from_url
from avatar_server.store.embedded import free_port

ADMIN_TOKEN = "adm_test_" + "x" * 24
ENGINE_KEY = "sk_engine_test_" + "y" * 16
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def fast_engine_config(**kw: Any) -> EngineConfig:
    base: dict[str, Any] = {"provisioning_delay": Delay("fixed", 0.3), "avatar_processing_delay": Delay("fixed", 0.2),
                            "ready_ttl": 30.0, "seed": 7}
    base.update(kw)
    return EngineConfig(**base)


class Http:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession()

    async def call(
        self, method: str, path: str, *, token: str | None = None, json_body: Any = None,
        headers: dict[str, str] | None = None, data: bytes | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": h}
        if json_body is not None:
            kwargs["json"] = json_body
        if data is not None:
            kwargs["data"] = data
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except json.JSONDecodeError:
                body = text
            return resp.status, body, resp.headers

    async def close(self) -> None:
        await self.http.close()


class EngineHarness(Http):
    """The engine alone on its own port (``avatar-server engine``), as a Runway stand-in."""

    def __init__(self, config: EngineConfig | None = None, *, key: str = ENGINE_KEY,
                 redis_url: str | None = None, public_url: str | None = None) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.key = key
        # with redis_url: the engine's avatars/documents persist there (as with ``--data-dir``/REDIS_URL)
        self.redis = client_from_url(redis_url) if redis_url else None
        store = (lambda: EngineCatalogStore(self.redis)) if self.redis is not None else None
        self.app = create_engine_app(config or fast_engine_config(), api_keys=lambda: (key,),
                                     public_url=public_url or self.base, catalog_store=store)
        self.runner = web.AppRunner(self.app)
        # public_url: where its consume says the media is (a LiveKit-style ``wss://`` URL stands in
        # for Runway's LiveKit answers); by default its own address

    async def start(self) -> EngineHarness:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        status, data, _ = await self.call(method, "/_control" + path, token=self.key, json_body=body,
                                          headers={"X-Runway-Version": "2024-11-06"})
        assert status < 300, (status, data)
        return data

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.close()
        if self.redis is not None:
            await self.redis.aclose()


class ServerHarness(Http):
    def __init__(self, settings: Settings, engine_config: EngineConfig | None = None) -> None:
        super().__init__(settings.base_url())
        self.settings = settings
        self.engine_config = engine_config
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None

    @property
    def engine_base(self) -> str:
        return "/engine"

    async def start(self) -> ServerHarness:
        self.app = create_app(self.settings, engine_config=self.engine_config)
        self.runner = web.AppRunner(self.app, handle_signals=False, keepalive_timeout=self.settings.idle_timeout)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.settings.host, self.settings.port).start()
        return self

    async def stop(self) -> None:
        """Stop the server process-equivalent (Redis data stays)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def admin(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, data, _ = await self.call(method, path, token=self.settings.admin_token, json_body=body, **kw)
        return status, data

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """The embedded engine's control API (engine mode only)."""
        status, data, _ = await self.call(method, "/engine/_control" + path, token=self.settings.admin_token,
                                          json_body=body, headers={"X-Runway-Version": "2024-11-06"})
        assert status < 300, (status, data)
        return data

    async def wait_for(self, session_id: str, predicate: Any, timeout: float = 15.0, token: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, body, _ = await self.call("GET", f"/v1/sessions/{session_id}",
                                              token=token or self.settings.admin_token)
            assert status == 200, (status, body)
            last = body
            if predicate(body):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not reached in {timeout}s; last record: {last}")

    async def stop_all(self) -> None:
        await self.stop()
        await self.close()


def make_settings(tmp: Path, redis_url: str, **kw: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=free_port(),
        admin_token=ADMIN_TOKEN,
        data_dir=tmp,
        redis_url=redis_url,
        provision_timeout=20.0,
        ready_timeout=20.0,
        abandon_grace=1.0,
        upstream_check_interval=1.0,
    )
    return replace(base, **kw)


async def upstream_final(control: Any, upstream_id: str, timeout: float = 3.0) -> dict:
    """The engine's record of an upstream session once it is terminal (an end's DELETE may be in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        rec = {s["id"]: s for s in await control("GET", "/sessions")}[upstream_id]
        if rec["status"] in TERMINAL or time.monotonic() > deadline:
            return rec
        await asyncio.sleep(0.05)


async def assert_no_leaks(server: ServerHarness, engine: Http | None, control: Any) -> None:
    """Invariant: every upstream session the engine created is terminal or owned by a live server session."""
    # an end that is being applied right now (its upstream DELETE in flight) gets a moment to land
    for _ in range(30):
        engine_sessions = await control("GET", "/sessions")
        status, page = await server.admin("GET", "/v1/sessions?status=active&limit=100")
        assert status == 200, page
        owned = {s["upstreamId"] for s in page["data"] if s["upstreamId"]}
        leaked = [s for s in engine_sessions if s["status"] not in TERMINAL and s["id"] not in owned]
        if not leaked:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"upstream sessions left running without a live server session: {leaked}")


@contextlib.asynccontextmanager
async def runway_mode(tmp: Path, redis_url: str, *, public_url: str | None = None,
                      ) -> AsyncIterator[tuple[ServerHarness, EngineHarness]]:
    """The server in Runway mode (``RUNWAYML_API_SECRET`` + ``RUNWAYML_BASE_URL``) against an engine
    started alone for it; on the way out (after a passing test) no upstream session may be left."""
    engine = await EngineHarness(fast_engine_config(), public_url=public_url).start()
    try:
        h = await ServerHarness(make_settings(tmp, redis_url, runway_secret=ENGINE_KEY,
                                              runway_base_url=engine.base)).start()
        try:
            yield h, engine
            await assert_no_leaks(h, engine, engine.control)
        finally:
            await h.stop_all()
    finally:
        await engine.stop()
