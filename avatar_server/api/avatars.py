"""Avatar routes (admin only): create, list, read, change, delete, and link documents one at a time.

Avatars live upstream; ``catalog.avatars`` forwards them and keeps links and the token
budget in Redis. Deleting an avatar ends its live sessions (reason ``admin``) first.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CATALOG
from ..models.avatars import AvatarCreate, AvatarPatch
from . import bodies
from .auth import require_admin
from .params import page_params, path_id

routes = web.RouteTableDef()


@routes.post("/v1/avatars")
async def create_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, AvatarCreate)
    return web.json_response(await request.app[CATALOG].avatars.create(body), status=201)


@routes.get("/v1/avatars")
async def list_avatars(request: web.Request) -> web.Response:
    require_admin(request)
    limit, cursor = page_params(request)
    return web.json_response(await request.app[CATALOG].avatars.page(limit=limit, cursor=cursor))


@routes.get("/v1/avatars/{id}")
async def get_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[CATALOG].avatars.get(path_id(request, "id", "avatar")))


@routes.patch("/v1/avatars/{id}")
async def patch_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    avatar_id = path_id(request, "id", "avatar")
    body = await bodies.parse(request, AvatarPatch)
    return web.json_response(await request.app[CATALOG].avatars.update(avatar_id, body))


@routes.delete("/v1/avatars/{id}")
async def delete_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    ended = await request.app[CATALOG].avatars.delete(path_id(request, "id", "avatar"))
    return web.Response(status=204, headers={"X-Sessions-Ended": str(ended)})


@routes.put("/v1/avatars/{id}/documents/{documentId}")
async def link_document(request: web.Request) -> web.Response:
    require_admin(request)
    avatar_id, document_id = path_id(request, "id", "avatar"), path_id(request, "documentId", "document")
    return web.json_response(await request.app[CATALOG].avatars.link(avatar_id, document_id))


@routes.delete("/v1/avatars/{id}/documents/{documentId}")
async def unlink_document(request: web.Request) -> web.Response:
    require_admin(request)
    avatar_id, document_id = path_id(request, "id", "avatar"), path_id(request, "documentId", "document")
    return web.json_response(await request.app[CATALOG].avatars.unlink(avatar_id, document_id))
