"""HTTP face of the engine's catalog: Runway's avatar and document routes.

    POST   /v1/avatars                200 avatar (PROCESSING)
    GET    /v1/avatars?limit&cursor   200 {data, hasMore, nextCursor}   newest first
    GET    /v1/avatars/{id}           200 avatar
    PATCH  /v1/avatars/{id}           200 avatar (409 replacing the image while PROCESSING)
    DELETE /v1/avatars/{id}           204
    POST   /v1/documents              200 document (with content and usedBy)
    GET    /v1/documents?limit&cursor&sort=createdAt|updatedAt&order=asc|desc
                                      200 {data (no content), hasMore, nextCursor}
    GET    /v1/documents/{id}         200 document
    PATCH  /v1/documents/{id}         204
    DELETE /v1/documents/{id}         204 (detached from every avatar)

Same auth, version header and error shape as the realtime-session routes (``engine.http.sessions``);
every route honours injected faults (ops ``avatar_create`` … ``document_list``).
"""

from __future__ import annotations

from aiohttp import web

from avatar_server.engine.catalog import EngineCatalog
from avatar_server.engine.catalog_bodies import parse_list_query
from avatar_server.engine.http.bodies import json_body
from avatar_server.engine.http.faults import guarded
from avatar_server.store.lex_index import is_index_member

ENGINE_CATALOG = web.AppKey("engine_catalog", EngineCatalog)


def add_catalog_routes(app: web.Application, catalog: EngineCatalog) -> None:
    app[ENGINE_CATALOG] = catalog
    route = guarded

    async def create_avatar(request: web.Request) -> web.StreamResponse:
        return web.json_response(await catalog.create_avatar(await json_body(request)))

    async def list_avatars(request: web.Request) -> web.StreamResponse:
        query = parse_list_query(request.query, documents=False, member_ok=is_index_member)
        return web.json_response(await catalog.list_avatars(query))

    async def get_avatar(request: web.Request) -> web.StreamResponse:
        return web.json_response(await catalog.get_avatar(request.match_info["id"]))

    async def update_avatar(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        return web.json_response(await catalog.update_avatar(request.match_info["id"], body))

    async def delete_avatar(request: web.Request) -> web.StreamResponse:
        await catalog.delete_avatar(request.match_info["id"])
        return web.Response(status=204)

    async def create_document(request: web.Request) -> web.StreamResponse:
        return web.json_response(await catalog.create_document(await json_body(request)))

    async def list_documents(request: web.Request) -> web.StreamResponse:
        query = parse_list_query(request.query, documents=True, member_ok=is_index_member)
        return web.json_response(await catalog.list_documents(query))

    async def get_document(request: web.Request) -> web.StreamResponse:
        return web.json_response(await catalog.get_document(request.match_info["id"]))

    async def update_document(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        await catalog.update_document(request.match_info["id"], body)
        return web.Response(status=204)

    async def delete_document(request: web.Request) -> web.StreamResponse:
        await catalog.delete_document(request.match_info["id"])
        return web.Response(status=204)

    app.router.add_post("/v1/avatars", route("avatar_create", create_avatar))
    app.router.add_get("/v1/avatars", route("avatar_list", list_avatars), allow_head=False)
    app.router.add_get("/v1/avatars/{id}", route("avatar_get", get_avatar), allow_head=False)
    app.router.add_patch("/v1/avatars/{id}", route("avatar_update", update_avatar))
    app.router.add_delete("/v1/avatars/{id}", route("avatar_delete", delete_avatar))
    app.router.add_post("/v1/documents", route("document_create", create_document))
    app.router.add_get("/v1/documents", route("document_list", list_documents), allow_head=False)
    app.router.add_get("/v1/documents/{id}", route("document_get", get_document), allow_head=False)
    app.router.add_patch("/v1/documents/{id}", route("document_update", update_document))
    app.router.add_delete("/v1/documents/{id}", route("document_delete", delete_document))
