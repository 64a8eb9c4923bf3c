"""Avatar routes (admin only): create, list, read, change, delete, and link documents one at a time.

Avatars live upstream; ``knowledge.service`` forwards them and keeps links and the token
budget in Redis. Deleting an avatar ends its live sessions (reason ``admin``) first.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import KNOWLEDGE
from ..models.avatars import AvatarCreate, AvatarPatch
from . import bodies
from .auth import require_admin
from .params import page_params, path_id

routes = web.RouteTableDef()

@routes.post("/v1/avatars")
async def create_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, AvatarCreate)
    return web.json_response(await request.app[KNOWLEDGE].create_avatar(body), status=201)


@routes.get("/v1/avatars")
async def list_avatars(request: web.Request) -> web.Response:
    require_admin(request)
    limit, cursor = page_params(request)
    return web.json_response(await request.app[KNOWLEDGE].list_avatars(limit=limit, cursor=cursor))


@routes.get("/v1/avatars/{id}")
async def get_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[KNOWLEDGE].get_avatar(path_id(request, "id", "avatar")))


@routes.patch("/v1/avatars/{id}")
async def patch_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    avatar_id = path_id(request, "id", "avatar")
    body = await bodies.parse(request, AvatarPatch)
    return web.json_response(await request.app[KNOWLEDGE].update_avatar(avatar_id, body))


@routes.delete("/v1/avatars/{id}")
async def delete_avatar(request: web.Request) -> web.Response:
    require_admin(request)
    ended = await request.app[KNOWLEDGE].delete_avatar(path_id(request, "id", "avatar"))
    return web.Response(status=204, headers={"X-Sessions-Ended": str(ended)})


@routes.put("/v1/avatars/{id}/documents/{documentId}")
async def link_document(request: web.Request) -> web.Response:
    require_admin(request)
    avatar_id, document_id = path_id(request, "id", "avatar"), path_id(request, "documentId", "document")
    return web.json_response(await request.app[KNOWLEDGE].link(avatar_id, document_id))


@routes.delete("/v1/avatars/{id}/documents/{documentId}")
async def unlink_document(request: web.Request) -> web.Response:
    require_admin(request)
    avatar_id, document_id = path_id(request, "id", "avatar"), path_id(request, "documentId", "document")
    return web.json_response(await request.app[KNOWLEDGE].unlink(avatar_id, document_id))
