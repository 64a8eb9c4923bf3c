"""The 50,000-token knowledge budget: exact edges, every way of linking, content edits, concurrent
links that must not jointly pass it, and upstream faults that must leave Redis as the upstream is."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from avatar_server.catalog.tokens import count_tokens
from avatar_server.errors import Conflict
from avatar_server.models.documents import KNOWLEDGE_TOKEN_LIMIT
from avatar_server.store import keys
from avatar_server.store.catalog import CatalogLock
from avatar_server.store.connection import client_from_url

from ..harness import ServerHarness
from .kb_helpers import Upstream, avatar_body, content_with_tokens, make_avatar, make_document

LIMIT = KNOWLEDGE_TOKEN_LIMIT


@functools.cache
def text(tokens: int) -> str:
    content = content_with_tokens(tokens)
    assert count_tokens(content) == tokens
    return content


def assert_budget_error(status: int, body: dict[str, Any], *, avatar_id: str | None, current: int,
                        document_tokens: int, field: str) -> None:
    assert status == 422, body
    err = body["error"]
    assert err["code"] == "knowledge_budget_exceeded", err
    assert err["field"] == field and err["limit"] == LIMIT
    assert err["currentTokens"] == current and err["documentTokens"] == document_tokens
    assert err.get("avatarId") == avatar_id
    assert str(LIMIT) in err["message"]


async def state(server: ServerHarness, upstream: Upstream, avatar_id: str, doc_ids: list[str]) -> Any:
    """What the server and the upstream say about one avatar's links and the documents' usedBy."""
    _, avatar = await server.admin("GET", f"/v1/avatars/{avatar_id}")
    held = await upstream.avatar(avatar_id)
    assert held is not None
    users = {}
    for d in doc_ids:
        _, doc = await server.admin("GET", f"/v1/documents/{d}")
        users[d] = (doc["tokens"], sorted(u["id"] for u in doc["usedBy"]), doc["content"])
    return sorted(avatar["documentIds"]), sorted(held["documentIds"]), users


async def test_budget_edges(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    half = await make_document(server, "half", text(25_000))
    rest = await make_document(server, "rest", text(25_000))
    over = await make_document(server, "over", text(25_001))
    assert (half["tokens"], rest["tokens"], over["tokens"]) == (25_000, 25_000, 25_001)
    ids = [half["id"], rest["id"], over["id"]]

    # exactly 50,000: allowed, at create and by links
    avatar = await make_avatar(server, documentIds=[half["id"], rest["id"]])
    assert sorted(avatar["documentIds"]) == sorted([half["id"], rest["id"]])
    second = await make_avatar(server, name="Second", documentIds=[half["id"]])

    # one over: refused, nothing changes (Redis nor upstream)
    before = await state(server, upstream, second["id"], ids)
    status, body = await server.admin("PUT", f"/v1/avatars/{second['id']}/documents/{over['id']}")
    assert_budget_error(status, body, avatar_id=second["id"], current=25_000, document_tokens=25_001,
                        field="documentId")
    assert body["error"]["documentId"] == over["id"]
    status, body = await server.admin("PATCH", f"/v1/avatars/{second['id']}", {"documentIds": [half["id"],
                                                                                             over["id"]]})
    assert_budget_error(status, body, avatar_id=second["id"], current=25_000, document_tokens=25_001,
                        field="documentIds")
    status, body = await server.admin("PATCH", f"/v1/avatars/{second['id']}", {"documentIds": ids})
    assert_budget_error(status, body, avatar_id=second["id"], current=25_000, document_tokens=50_001,
                        field="documentIds")
    assert await state(server, upstream, second["id"], ids) == before

    # the same at create: no avatar is made upstream
    count = len(await upstream.all_avatars())
    status, body = await server.admin("POST", "/v1/avatars", avatar_body(documentIds=[half["id"], over["id"]]))
    assert_budget_error(status, body, avatar_id=None, current=0, document_tokens=50_001, field="documentIds")
    assert len(await upstream.all_avatars()) == count

    # swapping within the budget is fine (the list replaces the old one)
    status, body = await server.admin("PATCH", f"/v1/avatars/{second['id']}", {"documentIds": [over["id"]]})
    assert status == 200 and body["documentIds"] == [over["id"]]

    # a content edit of a linked document that would pass the budget of any avatar using it
    before = await state(server, upstream, avatar["id"], ids)
    status, body = await server.admin("PATCH", f"/v1/documents/{rest['id']}", {"content": text(25_001)})
    assert_budget_error(status, body, avatar_id=avatar["id"], current=50_000, document_tokens=25_001,
                        field="content")
    assert await state(server, upstream, avatar["id"], ids) == before
    held = await upstream.document(rest["id"])
    assert held is not None and held["content"] == text(25_000)
    # ... while an edit that stays within it (or shrinks it) goes through
    status, body = await server.admin("PATCH", f"/v1/documents/{rest['id']}", {"content": text(24_000)})
    assert status == 200 and body["tokens"] == 24_000
    status, body = await server.admin("PATCH", f"/v1/documents/{rest['id']}", {"content": text(25_000)})
    assert status == 200 and body["tokens"] == 25_000
    # an unlinked document may grow as it likes
    lone = await make_document(server, "lone", "short")
    status, body = await server.admin("PATCH", f"/v1/documents/{lone['id']}", {"content": text(60_000)})
    assert status == 200 and body["tokens"] == 60_000
    status, body = await server.admin("PUT", f"/v1/avatars/{second['id']}/documents/{lone['id']}")
    assert_budget_error(status, body, avatar_id=second["id"], current=25_001, document_tokens=60_000,
                        field="documentId")


async def test_concurrent_links_never_pass_the_budget(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    docs = [await make_document(server, f"part {i}", text(15_000 + i)) for i in range(6)]
    avatar = await make_avatar(server)
    other = await make_avatar(server, name="Other")

    async def link(avatar_id: str, doc_id: str) -> int:
        status, _ = await server.admin("PUT", f"/v1/avatars/{avatar_id}/documents/{doc_id}")
        return status

    results = await asyncio.gather(*(link(a["id"], d["id"]) for d in docs for a in (avatar, other)))
    assert sorted(set(results)) == [200, 422], results
    assert results.count(200) == 6  # three 15,00x-token documents fit in 50,000 for each avatar
    tokens = {d["id"]: d["tokens"] for d in docs}
    for a in (avatar, other):
        _, got = await server.admin("GET", f"/v1/avatars/{a['id']}")
        held = await upstream.avatar(a["id"])
        assert held is not None and sorted(held["documentIds"]) == sorted(got["documentIds"])
        assert len(got["documentIds"]) == 3
        assert sum(tokens[d] for d in got["documentIds"]) <= LIMIT
    held_ids = {a["id"]: (await upstream.avatar(a["id"]) or {})["documentIds"] for a in (avatar, other)}
    for d in docs:
        _, got = await server.admin("GET", f"/v1/documents/{d['id']}")
        expected = sorted(aid for aid, linked in held_ids.items() if d["id"] in linked)
        assert sorted(u["id"] for u in got["usedBy"]) == expected


async def test_concurrent_content_edits_and_links(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    a = await make_document(server, "a", text(20_000))
    b = await make_document(server, "b", text(20_000))
    avatar = await make_avatar(server, documentIds=[a["id"]])
    # linking b (40,000) and growing a to 30,001 (50,001 with b) cannot both succeed
    link, grow = await asyncio.gather(
        server.admin("PUT", f"/v1/avatars/{avatar['id']}/documents/{b['id']}"),
        server.admin("PATCH", f"/v1/documents/{a['id']}", {"content": text(30_001)}),
    )
    assert sorted([link[0], grow[0]]) == [200, 422], (link, grow)
    _, got = await server.admin("GET", f"/v1/avatars/{avatar['id']}")
    total = 0
    for d in got["documentIds"]:
        _, doc = await server.admin("GET", f"/v1/documents/{d}")
        total += doc["tokens"]
    assert total <= LIMIT


async def test_upstream_fault_during_link(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    doc = await make_document(server, "facts", "Water boils at 100 degrees Celsius at sea level.")
    avatar = await make_avatar(server)
    ids = [doc["id"]]
    before = await state(server, upstream, avatar["id"], ids)

    # the upstream refuses the PATCH outright (retries exhausted): nothing changes anywhere
    await upstream.control("POST", "/faults", {"rules": [{"op": "avatar_update", "status": 500, "times": 8}]})
    status, body = await server.admin("PUT", f"/v1/avatars/{avatar['id']}/documents/{doc['id']}")
    assert status in (502, 503), body
    await upstream.control("DELETE", "/faults")
    assert await state(server, upstream, avatar["id"], ids) == before

    # the upstream applies the PATCH but answers an error: Redis follows what the upstream now holds
    await upstream.control("POST", "/faults", {"rules": [{"op": "avatar_update", "status": 400, "when": "after"}]})
    status, body = await server.admin("PUT", f"/v1/avatars/{avatar['id']}/documents/{doc['id']}")
    assert status == 502, body
    server_ids, upstream_ids, users = await state(server, upstream, avatar["id"], ids)
    assert server_ids == upstream_ids == [doc["id"]] and users[doc["id"]][1] == [avatar["id"]]

    # a failed content edit keeps the old token count and content
    before = await state(server, upstream, avatar["id"], ids)
    await upstream.control("POST", "/faults", {"rules": [{"op": "document_update", "status": 400}]})
    status, body = await server.admin("PATCH", f"/v1/documents/{doc['id']}", {"content": text(1_000)})
    assert status == 502, body
    assert await state(server, upstream, avatar["id"], ids) == before

    # a failed unlink leaves the link in place, on both sides
    await upstream.control("POST", "/faults", {"rules": [{"op": "avatar_update", "status": 400}]})
    status, body = await server.admin("DELETE", f"/v1/avatars/{avatar['id']}/documents/{doc['id']}")
    assert status == 502, body
    assert await state(server, upstream, avatar["id"], ids) == before


async def test_knowledge_lock_waits_expires_and_reports_busy(redis_url: str) -> None:
    """The lock serialises holders, a dead holder's claim expires by itself, and a caller that
    waits too long gets 409 knowledge_busy (with Retry-After) instead of hanging."""
    r = client_from_url(redis_url)
    try:
        lock = CatalogLock(r, ttl=0.6, wait=5)
        order: list[str] = []

        async def holder(name: str) -> None:
            async with lock.hold():
                order.append(f"{name}+")
                await asyncio.sleep(0.9)  # longer than the TTL: renewal keeps it
                order.append(f"{name}-")

        await asyncio.gather(holder("a"), holder("b"))
        assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
        assert await r.get(keys.kb_lock()) is None  # released

        await r.set(keys.kb_lock(), "a holder that died", px=300)
        async with lock.hold():  # waits for the dead claim to expire
            assert await r.get(keys.kb_lock()) != "a holder that died"

        impatient = CatalogLock(r, ttl=5, wait=0.2)
        async with lock.hold():
            with pytest.raises(Conflict) as caught:
                async with impatient.hold():
                    pass
        assert caught.value.code == "knowledge_busy" and caught.value.headers["Retry-After"] == "1"
    finally:
        await r.aclose()


async def test_the_upstreams_verdict_stands_last(each_mode: tuple[ServerHarness, Upstream]) -> None:
    """Our count lets a change through but the upstream refuses it for its knowledge limit: the same
    422 knowledge_budget_exceeded (saying it was the upstream), and nothing changes anywhere."""
    server, upstream = each_mode
    doc = await make_document(server, "doc", text(30_000))
    extra = await make_document(server, "extra", text(15_000))
    avatar = await make_avatar(server, documentIds=[doc["id"]])
    ids = [doc["id"], extra["id"]]
    before = await state(server, upstream, avatar["id"], ids)
    refusal = "Knowledge base exceeds the 50000 token limit for this avatar"
    await upstream.control("POST", "/faults", {"rules": [{"op": "avatar_update", "status": 400, "message": refusal}]})
    status, body = await server.admin("PUT", f"/v1/avatars/{avatar['id']}/documents/{extra['id']}")
    assert_budget_error(status, body, avatar_id=avatar["id"], current=30_000, document_tokens=15_000,
                        field="documentId")
    assert refusal in body["error"]["upstreamMessage"]
    assert await state(server, upstream, avatar["id"], ids) == before

    # a content edit the upstream refuses the same way: the old content and count stay
    await upstream.control("POST", "/faults", {"rules": [{"op": "document_update", "status": 400,
                                                          "message": refusal}]})
    status, body = await server.admin("PATCH", f"/v1/documents/{doc['id']}", {"content": text(35_000)})
    assert status == 422 and body["error"]["code"] == "knowledge_budget_exceeded", body
    assert body["error"]["documentTokens"] == 35_000 and refusal in body["error"]["upstreamMessage"]
    assert await state(server, upstream, avatar["id"], ids) == before

    # a refusal for another reason is still the upstream's error (502), not a budget verdict
    await upstream.control("POST", "/faults", {"rules": [{"op": "avatar_update", "status": 400,
                                                          "message": "Invalid avatar"}]})
    status, body = await server.admin("PUT", f"/v1/avatars/{avatar['id']}/documents/{extra['id']}")
    assert status == 502, body
    assert await state(server, upstream, avatar["id"], ids) == before
