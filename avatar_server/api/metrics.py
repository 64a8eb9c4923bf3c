"""``GET /metrics``: Prometheus text format, for the admin token or ``AVATAR_SERVER_METRICS_TOKEN``
(a scraper's credential that opens nothing else)."""

from __future__ import annotations

import hmac

from aiohttp import web

from ..appkeys import METRICS, SETTINGS
from ..errors import Forbidden, Unauthorized
from .auth import bearer, is_admin_token
from .cors import close_to_browsers

routes = web.RouteTableDef()


def _require_scraper(request: web.Request) -> None:
    token = bearer(request)
    if token is None:
        raise Unauthorized("metrics need Authorization: Bearer <metrics token or admin token>")
    close_to_browsers(request)
    if is_admin_token(request, token):
        return
    expected = request.app[SETTINGS].metrics_token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if token.startswith(("ct_", "pk_")):
        raise Forbidden("this credential may not read metrics")
    raise Unauthorized("the metrics token is not valid")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    _require_scraper(request)
    body, content_type = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
