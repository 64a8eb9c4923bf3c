"""``GET /openapi.json``: the document for the routes this app serves (built once per route set)."""

from __future__ import annotations

import functools
import json

from aiohttp import web

from .document import build_spec, served_routes

routes = web.RouteTableDef()


@functools.lru_cache(maxsize=8)
def _spec_text(served: frozenset[tuple[str, str]]) -> str:
    return json.dumps(build_spec(served))


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(text=_spec_text(frozenset(served_routes(request.app))), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})

