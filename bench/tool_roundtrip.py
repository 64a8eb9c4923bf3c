"""Tool round trip on the local engine: a visitor's message → the site backend's result in the reply.

Everything in this one process on 127.0.0.1 (bounded in count and time; loopback only), the flow of
tests/e2e/test_tool_rpc.py:

  * an embedded redis-server, avatar_server in engine mode (the engine mounted at /engine, its
    provisioning delay small: the figures are this server's, not a simulated Runway queue);
  * a site whose ``lookup_order`` backend_rpc tool points at an aiohttp site backend on 127.0.0.1
    that verifies every call's Standard Webhooks signature and answers after ``--backend-ms``;
  * an aiortc visitor on one session sends N messages over the data channel, alternating
    "look up order <n>" (a tool call) and a plain question (no tool: the engine's own reply time).

Per tool message: round trip = the message sent → the assistant's transcript carrying the result
(engine's intent → backend channel → server → signed POST → site backend → back → the reply);
beside it the site backend's own time (its handler, signature check included) and the plain reply's
round trip. Prints p50/p95 of each (ms) as JSON. The visitor, server, engine and backend share the
loop and the CPU: an upper bound for what a deployed server adds.

    python bench/tool_roundtrip.py                         # 100 tool calls, backend answers at once
    python bench/tool_roundtrip.py --calls 50 --backend-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from measure import ROOT, pct  # noqa: F401  (importing measure puts the project on sys.path)

from avatar_server.store.embedded import EmbeddedRedis, free_port  # noqa: E402

ORIGIN = "https://shop.example.com"
TIME_LIMIT = 300.0  # s: the whole run


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(pct(values, 0.5), 1), "p95": round(pct(values, 0.95), 1),
            "mean": round(statistics.fmean(values), 1) if values else float("nan")}


class SiteBackend:
    def __init__(self, delay: float) -> None:
        from standardwebhooks.webhooks import Webhook

        self.Webhook = Webhook
        self.delay = delay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/rpc"
        self.secret = ""
        self.own_ms: list[float] = []
        app = web.Application()
        app.router.add_post("/rpc", self._rpc)
        self.runner = web.AppRunner(app)

    async def _rpc(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await request.text()
        self.Webhook(self.secret).verify(body, dict(request.headers))
        call = json.loads(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = web.json_response({"status": "shipped", "orderId": call["args"].get("orderId")})
        self.own_ms.append((time.perf_counter() - started) * 1000)
        return answer

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aioice.ice

    from tests.e2e.rtc_helpers import connect_over_http
    from tests.harness import ServerHarness, fast_engine_config, make_settings

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback candidates only
    tmp = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    redis = EmbeddedRedis(tmp / "redis", persist=False)
    redis_url = await redis.start()
    (tmp / "data").mkdir()
    server = await ServerHarness(make_settings(tmp / "data", redis_url, allow_private_targets=True),
                                 fast_engine_config()).start()
    backend = SiteBackend(args.backend_ms / 1000)
    await backend.start()
    tool_ms: list[float] = []
    plain_ms: list[float] = []
    client = None
    sample: list[str] = []
    try:
        status, site = await server.admin("POST", "/v1/sites", {
            "name": "Shop", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 2, "tools": [{
                "type": "backend_rpc", "name": "lookup_order", "description": "Look up an order",
                "url": backend.url, "timeoutSeconds": 5,
                "parameters": [{"name": "orderId", "description": "the order number", "type": "string"}]}]})
        assert status == 201, site
        backend.secret = site["webhookSecret"]
        async with aiohttp.ClientSession() as http:
            status, creds, _ = await server.call("POST", "/v1/sessions/connect", token=site["publishableKey"],
                                                 headers={"Origin": ORIGIN},
                                                 json_body={"avatarId": "cooking-teacher", "maxDuration": 300})
            assert status == 200, creds
            client = await connect_over_http(http, creds["serverUrl"], creds["token"])
            await client.wait_open()

            async def ask(text: str, expect: str) -> float:
                seen = len(client.transcripts("assistant"))
                started = time.perf_counter()
                client.send({"type": "user_message", "text": text})
                await client.wait_for(lambda: any(expect in t for t in client.transcripts("assistant")[seen:]),
                                      timeout=20)
                return (time.perf_counter() - started) * 1000

            await ask("look up order 1", "shipped")  # warm-up: the backend channel and the HTTP pool
            backend.own_ms.clear()
            deadline = time.monotonic() + TIME_LIMIT - 30
            for n in range(args.calls):
                if time.monotonic() > deadline:
                    break
                order = str(1000 + n)
                tool_ms.append(await ask(f"please look up order {order}", order))
                plain_ms.append(await ask("hello, how are you today?", ""))
                # the avatar speaks each reply: wait for it to be quiet before the next message
                await asyncio.sleep(args.gap)
            sample = client.transcripts("assistant")[-4:]
    finally:
        if client is not None:
            await client.close()
        await server.stop_all()
        await backend.runner.cleanup()
        await redis.close()
    return {"calls": len(tool_ms), "backend_delay_ms": args.backend_ms,
            "tool_round_trip_ms": summary(tool_ms), "site_backend_own_ms": summary(backend.own_ms),
            "plain_reply_ms": summary(plain_ms), "cpus": os.cpu_count(), "last_replies": sample}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="tool calls (each followed by a plain message)")
    parser.add_argument("--backend-ms", type=float, default=0.0, help="the site backend's own delay")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between messages")
    args = parser.parse_args()
    os.environ.setdefault("AVATAR_SERVER_LOG_LEVEL", "WARNING")
    result = asyncio.run(asyncio.wait_for(run(args), TIME_LIMIT))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
