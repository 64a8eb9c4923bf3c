"""A site's backend for the webhook tests: a real aiohttp server on 127.0.0.1 that records every
request, and the receiver's side of Standard Webhooks (the ``standardwebhooks`` library)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from avatar_server.store.embedded import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    at: float


@dataclass
class Receiver:
    """A site's backend: answers per path — ``/ok`` 200, ``/fail-once`` 500 then 200 (per
    webhook-id), ``/fail`` always 500, ``/hang`` never answers (60 s)."""

    port: int = field(default_factory=free_port)
    got: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.got.append(Received(request.path, dict(request.headers), body, time.time()))
        if request.path == "/hang":
            await asyncio.sleep(60)
        if request.path == "/fail":
            return web.Response(status=500)
        if request.path == "/fail-once":
            seen = [r for r in self.got if r.headers.get("webhook-id") == request.headers.get("webhook-id")]
            if len(seen) == 1:
                return web.Response(status=500, text="not now")
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]

    async def wait(self, path: str, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.on(path)) < n:
            assert time.monotonic() < deadline, f"{len(self.on(path))} of {n} requests on {path}: {self.got}"
            await asyncio.sleep(0.02)
        return self.on(path)


def verify(secret: str, r: Received) -> Any:
    """The receiver's side of Standard Webhooks, with the library."""
    return Webhook(secret).verify(r.body, r.headers)
