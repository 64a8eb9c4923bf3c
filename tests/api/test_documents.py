"""Knowledge documents end to end: the server forwards them to the upstream (the embedded engine,
or a separately started engine in Runway mode) and keeps their token counts and links in Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from avatar_server.catalog.tokens import count_tokens

from ..harness import ServerHarness
from .kb_helpers import Upstream, make_avatar, make_document, upstream_of


async def test_document_crud(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    content = "# Returns\n\nWe offer a 30-day return policy on every order."
    status, doc = await server.admin("POST", "/v1/documents", {"name": "Returns", "content": content})
    assert status == 201, doc
    assert doc["name"] == "Returns" and doc["content"] == content and doc["type"] == "text"
    assert doc["tokens"] == count_tokens(content) and doc["usedBy"] == []
    doc_id = doc["id"]
    uuid.UUID(doc_id, version=4)

    held = await upstream.document(doc_id)  # it lives upstream, with Runway's fields
    assert held is not None and held["content"] == content and held["name"] == "Returns"

    status, got = await server.admin("GET", f"/v1/documents/{doc_id}")
    assert status == 200 and got == doc

    status, page = await server.admin("GET", "/v1/documents?limit=10")
    assert status == 200 and page["hasMore"] is False and page["nextCursor"] is None
    assert [d["id"] for d in page["data"]] == [doc_id]
    assert "content" not in page["data"][0] and page["data"][0]["tokens"] == doc["tokens"]

    status, renamed = await server.admin("PATCH", f"/v1/documents/{doc_id}", {"name": "Returns policy"})
    assert status == 200 and renamed["name"] == "Returns policy" and renamed["tokens"] == doc["tokens"]
    assert renamed["content"] == content

    longer = content + "\n\nRefunds are paid within 5 business days to the original payment method."
    status, edited = await server.admin("PATCH", f"/v1/documents/{doc_id}", {"content": longer})
    assert status == 200 and edited["content"] == longer and edited["tokens"] == count_tokens(longer)
    assert edited["tokens"] > doc["tokens"]
    held = await upstream.document(doc_id)
    assert held is not None and held["content"] == longer and held["name"] == "Returns policy"
    status, page = await server.admin("GET", "/v1/documents")
    assert page["data"][0]["name"] == "Returns policy" and page["data"][0]["tokens"] == edited["tokens"]

    status, _ = await server.admin("DELETE", f"/v1/documents/{doc_id}")
    assert status == 204
    assert await upstream.document(doc_id) is None
    status, body = await server.admin("GET", f"/v1/documents/{doc_id}")
    assert status == 404 and body["error"]["code"] == "document_not_found"
    status, body = await server.admin("DELETE", f"/v1/documents/{doc_id}")
    assert status == 404
    status, page = await server.admin("GET", "/v1/documents")
    assert page["data"] == []


async def test_used_by_and_delete_detaches_everywhere(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    doc = await make_document(server)
    other = await make_document(server, "Shipping", "We ship in 2 days.")
    ada = await make_avatar(server, name="Ada", documentIds=[doc["id"], other["id"]])
    bob = await make_avatar(server, name="Bob")
    status, bob = await server.admin("PUT", f"/v1/avatars/{bob['id']}/documents/{doc['id']}")
    assert status == 200 and bob["documentIds"] == [doc["id"]]

    status, got = await server.admin("GET", f"/v1/documents/{doc['id']}")
    assert status == 200
    assert sorted(u["id"] for u in got["usedBy"]) == sorted([ada["id"], bob["id"]])
    assert {u["name"] for u in got["usedBy"]} == {"Ada", "Bob"}
    assert all(set(u) == {"id", "name", "imageUrl"} for u in got["usedBy"])
    assert all(u["imageUrl"].startswith("data:image/") for u in got["usedBy"])  # the engine's small previews
    status, page = await server.admin("GET", "/v1/documents")
    listed = {d["id"]: d for d in page["data"]}
    assert len(listed[doc["id"]]["usedBy"]) == 2 and [u["id"] for u in listed[other["id"]]["usedBy"]] == [ada["id"]]

    status, _ = await server.admin("DELETE", f"/v1/documents/{doc['id']}")
    assert status == 204
    for avatar_id, left in ((ada["id"], [other["id"]]), (bob["id"], [])):
        status, avatar = await server.admin("GET", f"/v1/avatars/{avatar_id}")
        assert status == 200 and avatar["documentIds"] == left
        held = await upstream.avatar(avatar_id)
        assert held is not None and held["documentIds"] == left
    # deleting an avatar removes it from usedBy
    status, _ = await server.admin("DELETE", f"/v1/avatars/{ada['id']}")
    assert status == 204
    status, got = await server.admin("GET", f"/v1/documents/{other['id']}")
    assert got["usedBy"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "", "content": "x"}, "name"),
    ({"name": "n" * 256, "content": "x"}, "name"),
    ({"name": "ok", "content": ""}, "content"),
    ({"name": "ok", "content": "c" * 200_001}, "content"),
    ({"name": "ok"}, "content"),
    ({"name": "ok", "content": "x", "extra": 1}, "extra"),
])
async def test_document_validation_names_the_field(server: ServerHarness, body: dict[str, Any], field: str) -> None:
    status, answer = await server.admin("POST", "/v1/documents", body)
    assert status == 422 and answer["error"]["field"] == field, answer
    assert (await upstream_of(server).call("GET", "/v1/documents?limit=10"))[1]["data"] == []


async def test_document_patch_validation_and_404s(server: ServerHarness) -> None:
    doc = await make_document(server)
    for body, field in (({}, "body"), ({"name": None}, "name"), ({"content": "c" * 200_001}, "content")):
        status, answer = await server.admin("PATCH", f"/v1/documents/{doc['id']}", body)
        assert status == 422 and answer["error"]["field"] == field, answer
    missing = str(uuid.uuid4())
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        status, answer = await server.admin(method, f"/v1/documents/{missing}", body)
        assert status == 404 and answer["error"]["code"] == "document_not_found", (method, answer)
    status, answer = await server.admin("GET", "/v1/documents/not-a-uuid")
    assert status == 404
    status, answer = await server.admin("GET", "/v1/documents?limit=0")
    assert status == 422 and answer["error"]["field"] == "limit"
    status, answer = await server.admin("GET", "/v1/documents?cursor=garbage")
    assert status == 422 and answer["error"]["field"] == "cursor"


async def test_documents_are_admin_only(server: ServerHarness) -> None:
    status, _, _ = await server.call("GET", "/v1/documents")
    assert status == 401
    status, _, _ = await server.call("POST", "/v1/documents", token="pk_nope", json_body={"name": "a", "content": "b"})
    assert status in (401, 403)
