"""A site's webhooks (admin only): rotate the signing secret, list the latest deliveries, redeliver one."""

from __future__ import annotations

import re

from aiohttp import web

from ..appkeys import SITES, WEBHOOKS
from ..errors import NotFound
from ..logs import register_secret
from ..models.sites import SiteWithSecret, new_webhook_secret
from ..models.webhooks import WebhookDelivery, WebhookDeliveryPage
from . import bodies
from .auth import require_admin
from .params import path_id

routes = web.RouteTableDef()

_DELIVERY_ID = re.compile(r"^msg_[0-9a-f]{32}$")
DELIVERIES_MAX = 100


def _no_site(request: web.Request) -> NotFound:
    return NotFound(f"no site {request.match_info['id'][:64]}", code="site_not_found")


@routes.post("/v1/sites/{id}/rotate-webhook-secret")
async def rotate_webhook_secret(request: web.Request) -> web.Response:
    require_admin(request)
    site_id = path_id(request, "id", "site")
    secret = new_webhook_secret()
    register_secret(secret)
    if not await request.app[SITES].rotate_webhook_secret(site_id, secret):
        raise _no_site(request)
    site = await request.app[SITES].get(site_id)
    if site is None:
        raise _no_site(request)
    return web.json_response(SiteWithSecret(**site.model_dump(), webhookSecret=secret).model_dump(mode="json"))


@routes.get("/v1/sites/{id}/webhook-deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    require_admin(request)
    site_id = path_id(request, "id", "site")
    limit = bodies.query_int(request, "limit", 20, 1, DELIVERIES_MAX)
    if await request.app[SITES].get(site_id) is None:
        raise _no_site(request)
    rows = await request.app[WEBHOOKS].deliveries(site_id, limit)
    page = WebhookDeliveryPage(data=[WebhookDelivery.of(r) for r in rows])
    return web.json_response(page.model_dump(mode="json"))


@routes.post("/v1/sites/{id}/webhook-deliveries/{deliveryId}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    """Due again at once, with the same webhook-id and body (a settled one gets a fresh 24 h)."""
    require_admin(request)
    site_id = path_id(request, "id", "site")
    delivery_id = request.match_info["deliveryId"]
    if not _DELIVERY_ID.match(delivery_id):
        raise NotFound(f"no delivery {delivery_id[:64]}", code="delivery_not_found")
    record = await request.app[WEBHOOKS].redeliver(delivery_id, site_id=site_id)
    if record is None:
        raise NotFound(f"no delivery {delivery_id} for this site", code="delivery_not_found")
    return web.json_response(WebhookDelivery.of(record).model_dump(mode="json"), status=202)
