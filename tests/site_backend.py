"""A site's own backend for the tool tests: a real aiohttp server on 127.0.0.1 that verifies every
call's Standard Webhooks signature (the ``standardwebhooks`` library) and answers per tool:
``check_stock`` fails (500), ``track_parcel`` answers after 3 s (longer than a short tool timeout),
anything else says the order shipped. A call with a bad signature is counted and answered 401."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from avatar_server.store.embedded import free_port


class SignedSiteBackend:
    def __init__(self, secret: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/rpc"
        # the site's webhook secret: made here, or set once the server has made the site
        self.secret = secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.calls: list[dict[str, Any]] = []
        self.bad_signatures = 0
        app = web.Application()
        app.router.add_post("/rpc", self._rpc)
        self.runner = web.AppRunner(app)

    async def _rpc(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        call = json.loads(body)
        self.calls.append(call)
        if call["tool"] == "check_stock":
            return web.json_response({"error": "database down"}, status=500)
        if call["tool"] == "track_parcel":
            await asyncio.sleep(3)
        return web.json_response({"status": "shipped", "orderId": call["args"].get("orderId")})

    async def __aenter__(self) -> SignedSiteBackend:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def backend_tool(name: str, param: str, url: str | None = None, timeout: float = 5) -> dict[str, Any]:
    """A site's ``backend_rpc`` tool with one string parameter (no url: Runway-side only)."""
    tool: dict[str, Any] = {"type": "backend_rpc", "name": name, "description": f"{name} for the visitor",
                            "parameters": [{"name": param, "description": "which one", "type": "string"}]}
    if url is not None:
        tool |= {"url": url, "timeoutSeconds": timeout}
    return tool
