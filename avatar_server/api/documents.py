"""Knowledge document routes (admin only). Each document reports ``tokens`` (the server's count,
taken when its content is written) and ``usedBy``; deleting one detaches it from every avatar."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import CATALOG
from ..models.documents import DocumentCreate, DocumentPatch
from . import bodies
from .auth import require_admin
from .params import page_params, path_id

routes = web.RouteTableDef()


@routes.post("/v1/documents")
async def create_document(request: web.Request) -> web.Response:
    require_admin(request)
    body = await bodies.parse(request, DocumentCreate)
    return web.json_response(await request.app[CATALOG].documents.create(body), status=201)


@routes.get("/v1/documents")
async def list_documents(request: web.Request) -> web.Response:
    require_admin(request)
    limit, cursor = page_params(request)
    return web.json_response(await request.app[CATALOG].documents.page(limit=limit, cursor=cursor))


@routes.get("/v1/documents/{id}")
async def get_document(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[CATALOG].documents.get(path_id(request, "id", "document")))


@routes.patch("/v1/documents/{id}")
async def patch_document(request: web.Request) -> web.Response:
    require_admin(request)
    document_id = path_id(request, "id", "document")
    body = await bodies.parse(request, DocumentPatch)
    return web.json_response(await request.app[CATALOG].documents.update(document_id, body))


@routes.delete("/v1/documents/{id}")
async def delete_document(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[CATALOG].documents.delete(path_id(request, "id", "document"))
    return web.Response(status=204)
