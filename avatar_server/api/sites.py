"""Site routes (admin only): create, list, read, change, delete, rotate the publishable key.

A site's ``maxDuration`` may not exceed the configured cap (``AVATAR_SERVER_SESSION_CAP_SECONDS``);
it is the ceiling of every session started with the site's key.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import SETTINGS, SITES
from ..errors import NotFound, ValidationFailed
from ..logs import register_secret
from ..models.sites import Site, SiteCreate, SitePatch, SiteWithSecret, new_webhook_secret
from ..webhooks import check_webhook_url
from . import bodies
from .auth import require_admin
from .params import page_params, path_id

routes = web.RouteTableDef()


def _check_cap(request: web.Request, max_duration: int | None) -> None:
    cap = request.app[SETTINGS].cap_seconds
    if max_duration is not None and max_duration > cap:
        raise ValidationFailed(f"maxDuration may be at most {cap} seconds (the server's cap)",
                               field="maxDuration", limit=cap)


async def _check_webhook_url(request: web.Request, url: str | None) -> None:
    if url is not None:
        await check_webhook_url(url, allow_private=request.app[SETTINGS].allow_private_targets)


async def _check_tool_urls(request: web.Request, tools: list[dict[str, Any]] | None) -> None:
    """A backend_rpc tool's url follows the webhook target rules (https, a public domain name)."""
    for i, tool in enumerate(tools or []):
        if tool.get("url") is not None:
            await check_webhook_url(tool["url"], allow_private=request.app[SETTINGS].allow_private_targets,
                                    field=f"tools.{i}.url")


def _json(site: Site, status: int = 200) -> web.Response:
    return web.json_response(site.model_dump(mode="json"), status=status)


async def _site_or_404(request: web.Request) -> Site:
    site = await request.app[SITES].get(path_id(request, "id", "site"))
    if site is None:
        raise NotFound(f"no site {request.match_info['id']}", code="site_not_found")
    return site


@routes.post("/v1/sites")
async def create_site(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, SiteCreate)
    _check_cap(request, body.maxDuration)
    await _check_webhook_url(request, body.webhookUrl)
    await _check_tool_urls(request, body.model_dump()["tools"])
    secret = new_webhook_secret()
    register_secret(secret)
    site = await request.app[SITES].create(body.model_dump(), webhook_secret=secret)
    # the webhook secret is shown here and by rotate-webhook-secret only
    return web.json_response(SiteWithSecret(**site.model_dump(), webhookSecret=secret).model_dump(mode="json"),
                             status=201)


@routes.get("/v1/sites")
async def list_sites(request: web.Request) -> web.Response:
    require_admin(request)
    limit, cursor = page_params(request)
    sites, next_cursor = await request.app[SITES].list(limit=limit, cursor=cursor)
    page: dict[str, Any] = {
        "data": [s.model_dump(mode="json") for s in sites],
        "hasMore": next_cursor is not None,
        "nextCursor": next_cursor,
    }
    return web.json_response(page)


@routes.get("/v1/sites/{id}")
async def get_site(request: web.Request) -> web.Response:
    require_admin(request)
    return _json(await _site_or_404(request))


@routes.patch("/v1/sites/{id}")
async def patch_site(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, SitePatch)
    changes = body.changes()
    _check_cap(request, changes.get("maxDuration"))
    await _check_webhook_url(request, changes.get("webhookUrl"))
    await _check_tool_urls(request, changes.get("tools"))
    site = await request.app[SITES].update(path_id(request, "id", "site"), changes)
    if site is None:
        raise NotFound(f"no site {request.match_info['id']}", code="site_not_found")
    return _json(site)


@routes.delete("/v1/sites/{id}")
async def delete_site(request: web.Request) -> web.Response:
    require_admin(request)
    if not await request.app[SITES].delete(path_id(request, "id", "site")):
        raise NotFound(f"no site {request.match_info['id']}", code="site_not_found")
    return web.Response(status=204)


@routes.post("/v1/sites/{id}/rotate-key")
async def rotate_key(request: web.Request) -> web.Response:
    require_admin(request)
    site = await request.app[SITES].rotate_key(path_id(request, "id", "site"))
    if site is None:
        raise NotFound(f"no site {request.match_info['id']}", code="site_not_found")
    return _json(site)
