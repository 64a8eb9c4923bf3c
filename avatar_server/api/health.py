"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..appkeys import REDIS, UPSTREAM

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    redis_ok, upstream_ok = await asyncio.gather(request.app[REDIS].ping(), request.app[UPSTREAM].ping())
    ok = redis_ok and upstream_ok
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "redis": redis_ok, "upstream": upstream_ok},
        status=200 if ok else 503,
    )
