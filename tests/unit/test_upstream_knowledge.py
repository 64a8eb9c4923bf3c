"""The upstream client's avatar and document calls: Runway's paths and fields, creates never
retried after an ambiguous failure, reads and changes retried, 404s mapped."""

from __future__ import annotations

import json

import httpx
import pytest

from avatar_server.errors import NotFound, UpstreamAmbiguous, UpstreamStatusError

from .test_upstream_client import FakeSleep, Upstream, make_client

AID = "0b6c1c1e-5d3e-4f6a-8b7c-9d0e1f2a3b4c"
AVATAR = {"id": AID, "name": "Ada", "status": "PROCESSING", "documentIds": []}


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


async def test_create_avatar_posts_the_body_and_is_not_retried_after_a_502(sleep: FakeSleep) -> None:
    up = Upstream(httpx.Response(502, json={"error": "bad gateway"}), httpx.Response(200, json=AVATAR))
    async with make_client(up, sleep) as client:
        with pytest.raises(UpstreamAmbiguous):
            await client.create_avatar({"name": "Ada", "referenceImage": "runway://x" * 2})
    assert len(up.requests) == 1
    assert up.requests[0].method == "POST" and up.requests[0].url.path == "/v1/avatars"
    assert json.loads(up.requests[0].content)["name"] == "Ada"


async def test_create_document_is_retried_after_a_refusal(sleep: FakeSleep) -> None:
    doc = {"id": AID, "name": "FAQ", "content": "x", "type": "text", "usedBy": []}
    up = Upstream(httpx.Response(503, json={"error": "busy"}), httpx.Response(200, json=doc))
    async with make_client(up, sleep) as client:
        assert (await client.create_document({"name": "FAQ", "content": "x"}))["id"] == AID
    assert len(up.requests) == 2 and up.requests[1].url.path == "/v1/documents"


async def test_create_answer_without_an_id_is_ambiguous(sleep: FakeSleep) -> None:
    up = Upstream(httpx.Response(200, json={"nope": 1}))
    async with make_client(up, sleep) as client:
        with pytest.raises(UpstreamAmbiguous):
            await client.create_avatar({"name": "Ada"})


async def test_reads_and_changes_are_retried_and_mapped(sleep: FakeSleep) -> None:
    up = Upstream(httpx.Response(502), httpx.Response(200, json=AVATAR))
    async with make_client(up, sleep) as client:
        assert (await client.get_avatar(AID))["name"] == "Ada"
    assert [r.url.path for r in up.requests] == [f"/v1/avatars/{AID}"] * 2

    up = Upstream(httpx.Response(504), httpx.Response(200, json={**AVATAR, "documentIds": [AID]}))
    async with make_client(up, sleep) as client:
        assert (await client.update_avatar(AID, {"documentIds": [AID]}))["documentIds"] == [AID]
    assert up.requests[-1].method == "PATCH" and json.loads(up.requests[-1].content) == {"documentIds": [AID]}

    up = Upstream(httpx.Response(204))
    async with make_client(up, sleep) as client:
        assert await client.update_document(AID, {"content": "new"}) is None
        assert await client.delete_document(AID) is True
    up = Upstream(httpx.Response(404, json={"error": "Not found"}))
    async with make_client(up, sleep) as client:
        assert await client.delete_avatar(AID) is False
        with pytest.raises(NotFound):
            await client.get_document(AID)
    up = Upstream(httpx.Response(409, json={"error": "still processing"}))
    async with make_client(up, sleep) as client:
        with pytest.raises(UpstreamStatusError) as caught:
            await client.update_avatar(AID, {"referenceImage": "runway://abcdefghij"})
    assert caught.value.code == "upstream_conflict" and len(up.requests) == 1


async def test_lists_pass_limit_and_cursor(sleep: FakeSleep) -> None:
    up = Upstream(httpx.Response(200, json={"data": [AVATAR], "hasMore": False, "nextCursor": None}))
    async with make_client(up, sleep) as client:
        page = await client.list_avatars(limit=10, cursor="abc")
        await client.list_documents(limit=5)
    assert page["data"][0]["id"] == AID
    assert dict(up.requests[0].url.params) == {"limit": "10", "cursor": "abc"}
    assert dict(up.requests[1].url.params) == {"limit": "5"} and up.requests[1].url.path == "/v1/documents"
