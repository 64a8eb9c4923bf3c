"""Avatars end to end in both modes: CRUD forwarded upstream with Runway's field names, links
one at a time and as a list, pagination that stays stable while items come and go, sessions
refused for avatars that are not READY, and what deleting an avatar does to its sessions."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from ..catalog_helpers import AVATAR_KEYS
from ..harness import EngineHarness, ServerHarness
from .kb_helpers import (
    Upstream,
    avatar_body,
    make_avatar,
    make_document,
    png_bytes,
    upstream_of,
    wait_status,
)


async def test_avatar_crud(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    doc = await make_document(server)
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(
        "Ada", startScript="Hello!", documentIds=[doc["id"]], imageProcessing="none"))
    assert status == 201, avatar
    assert set(avatar) == AVATAR_KEYS, avatar
    assert avatar["status"] == "PROCESSING" and avatar["name"] == "Ada" and avatar["startScript"] == "Hello!"
    assert avatar["voice"] == {"type": "runway-live-preset", "presetId": "adrian"}
    assert avatar["documentIds"] == [doc["id"]]
    avatar_id = avatar["id"]
    held = await upstream.avatar(avatar_id)
    assert held is not None and held["name"] == "Ada" and held["documentIds"] == [doc["id"]]

    ready = await wait_status(server, avatar_id, "READY")
    assert ready["id"] == avatar_id and "failureReason" not in ready

    status, page = await server.admin("GET", "/v1/avatars?limit=5")
    assert status == 200 and [a["id"] for a in page["data"]] == [avatar_id]
    assert page["data"][0]["status"] == "READY" and page["hasMore"] is False

    status, changed = await server.admin("PATCH", f"/v1/avatars/{avatar_id}", {
        "name": "Ada Lovelace", "startScript": None, "personality": "Be brief.",
        "voice": {"type": "runway-live-preset", "presetId": "luna"}})
    assert status == 200, changed
    assert changed["name"] == "Ada Lovelace" and changed["startScript"] is None
    assert changed["personality"] == "Be brief." and changed["voice"]["presetId"] == "luna"
    assert changed["documentIds"] == [doc["id"]]
    held = await upstream.avatar(avatar_id)
    assert held is not None and held["name"] == "Ada Lovelace" and held["startScript"] is None

    status, got = await server.admin("GET", f"/v1/documents/{doc['id']}")
    assert [u["name"] for u in got["usedBy"]] == ["Ada Lovelace"]

    status, _ = await server.admin("DELETE", f"/v1/avatars/{avatar_id}")
    assert status == 204
    assert await upstream.avatar(avatar_id) is None
    for method in ("GET", "DELETE"):
        status, body = await server.admin(method, f"/v1/avatars/{avatar_id}")
        assert status == 404 and body["error"]["code"] == "avatar_not_found"
    status, page = await server.admin("GET", "/v1/avatars")
    assert page["data"] == []
    status, got = await server.admin("GET", f"/v1/documents/{doc['id']}")
    assert got["usedBy"] == []


async def test_links(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    a, b, c = [await make_document(server, f"doc {i}", f"Fact number {i}.") for i in range(3)]
    avatar = await make_avatar(server)
    aid = avatar["id"]
    status, avatar = await server.admin("PUT", f"/v1/avatars/{aid}/documents/{a['id']}")
    assert status == 200 and avatar["documentIds"] == [a["id"]]
    status, avatar = await server.admin("PUT", f"/v1/avatars/{aid}/documents/{b['id']}")
    assert status == 200 and avatar["documentIds"] == [a["id"], b["id"]]
    status, again = await server.admin("PUT", f"/v1/avatars/{aid}/documents/{b['id']}")  # idempotent
    assert status == 200 and again["documentIds"] == [a["id"], b["id"]]
    status, avatar = await server.admin("PATCH", f"/v1/avatars/{aid}", {"documentIds": [c["id"], a["id"]]})
    assert status == 200 and avatar["documentIds"] == [c["id"], a["id"]]
    held = await upstream.avatar(aid)
    assert held is not None and held["documentIds"] == [c["id"], a["id"]]
    status, got_b = await server.admin("GET", f"/v1/documents/{b['id']}")
    assert got_b["usedBy"] == []
    status, got_c = await server.admin("GET", f"/v1/documents/{c['id']}")
    assert [u["id"] for u in got_c["usedBy"]] == [aid]
    status, avatar = await server.admin("DELETE", f"/v1/avatars/{aid}/documents/{c['id']}")
    assert status == 200 and avatar["documentIds"] == [a["id"]]
    held = await upstream.avatar(aid)
    assert held is not None and held["documentIds"] == [a["id"]]
    status, avatar = await server.admin("PATCH", f"/v1/avatars/{aid}", {"documentIds": []})
    assert status == 200 and avatar["documentIds"] == []
    for doc in (a, b, c):
        status, got = await server.admin("GET", f"/v1/documents/{doc['id']}")
        assert got["usedBy"] == []


async def test_unknown_documents_and_avatars(server: ServerHarness) -> None:
    doc = await make_document(server)
    avatar = await make_avatar(server)
    ghost = str(uuid.uuid4())
    status, body = await server.admin("POST", "/v1/avatars", avatar_body(documentIds=[doc["id"], ghost]))
    assert status == 422 and body["error"]["field"] == "documentIds.1", body
    status, body = await server.admin("PATCH", f"/v1/avatars/{avatar['id']}", {"documentIds": [ghost]})
    assert status == 422 and body["error"]["field"] == "documentIds.0", body
    status, body = await server.admin("PUT", f"/v1/avatars/{avatar['id']}/documents/{ghost}")
    assert status == 404 and body["error"]["code"] == "document_not_found"
    status, body = await server.admin("PUT", f"/v1/avatars/{ghost}/documents/{doc['id']}")
    assert status == 404 and body["error"]["code"] == "avatar_not_found"
    status, body = await server.admin("PATCH", f"/v1/avatars/{ghost}", {"name": "x"})
    assert status == 404 and body["error"]["code"] == "avatar_not_found"
    status, body = await server.admin("GET", "/v1/avatars/nope")
    assert status == 404
    assert len(await upstream_of(server).all_avatars()) == 1
    status, avatar = await server.admin("GET", f"/v1/avatars/{avatar['id']}")
    assert avatar["documentIds"] == []


@pytest.mark.parametrize(("change", "field"), [
    ({"name": ""}, "name"),
    ({"name": "n" * 51}, "name"),
    ({"personality": "p" * 10_001}, "personality"),
    ({"personality": ""}, "personality"),
    ({"startScript": "s" * 2_001}, "startScript"),
    ({"voice": {"type": "runway-live-preset", "presetId": "nobody"}}, "voice.presetId"),
    ({"voice": {"type": "custom", "id": "not-a-uuid"}}, "voice.id"),
    ({"voice": {"type": "other"}}, "voice.type"),
    ({"imageProcessing": "fancy"}, "imageProcessing"),
    ({"documentIds": [str(uuid.uuid4()) for _ in range(51)]}, "documentIds"),
    ({"documentIds": ["x"]}, "documentIds.0"),
])
async def test_avatar_validation_names_the_field(server: ServerHarness, change: dict[str, Any], field: str) -> None:
    status, body = await server.admin("POST", "/v1/avatars", avatar_body(**change))
    assert status == 422 and body["error"]["field"] == field, body
    assert await upstream_of(server).all_avatars() == []


async def test_custom_voice_is_passed_on(server: ServerHarness) -> None:
    voice_id = str(uuid.uuid4())
    avatar = await make_avatar(server, voice={"type": "custom", "id": voice_id})
    assert avatar["voice"]["type"] == "custom" and avatar["voice"]["id"] == voice_id


async def _walk(server: ServerHarness, path: str, make: Any, delete: Any) -> None:
    """Walk every page while items are added and deleted: each item present for the whole walk is
    seen exactly once, nothing is seen twice, nothing deleted before its page is seen."""
    items = [await make(i) for i in range(9)]
    stable = {items[i] for i in (0, 1, 3, 4, 6, 8)}
    doomed = [items[2], items[5], items[7]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        status, page = await server.admin("GET", f"{path}?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        seen += [x["id"] for x in page["data"]]
        pages += 1
        if pages == 1:
            await delete(doomed.pop(0))  # not yet seen
            await delete(items[0])  # already seen
            stable.discard(items[0])
            await make(100)
        elif doomed:
            await delete(doomed.pop(0))
            await make(100 + pages)
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            break
        cursor = page["nextCursor"]
    assert len(seen) == len(set(seen)), seen
    assert stable <= set(seen)
    assert items[2] not in seen and items[5] not in seen


async def test_document_pages_stable_under_changes(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, _ = each_mode
    async def make(i: int) -> str:
        return (await make_document(server, f"doc {i}", f"content {i}"))["id"]

    async def delete(doc_id: str) -> None:
        status, _ = await server.admin("DELETE", f"/v1/documents/{doc_id}")
        assert status == 204

    await _walk(server, "/v1/documents", make, delete)


async def test_avatar_pages_stable_under_changes(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, _ = each_mode
    async def make(i: int) -> str:
        return (await make_avatar(server, name=f"avatar {i}"))["id"]

    async def delete(avatar_id: str) -> None:
        status, _ = await server.admin("DELETE", f"/v1/avatars/{avatar_id}")
        assert status == 204

    await _walk(server, "/v1/avatars", make, delete)


async def _start(server: ServerHarness, avatar_id: str) -> tuple[int, Any]:
    return await server.admin("POST", "/v1/sessions", {"avatar": {"type": "custom", "avatarId": avatar_id}})


async def test_sessions_need_a_ready_avatar(server: ServerHarness) -> None:
    await server.control("PATCH", "/config", {"avatarProcessingDelay": "fixed:30"})
    avatar = await make_avatar(server)
    status, body = await _start(server, avatar["id"])
    assert status == 409 and body["error"]["code"] == "avatar_not_ready", body
    assert body["error"]["status"] == "PROCESSING"
    status, body = await server.admin("POST", "/v1/sessions/connect", {"avatarId": avatar["id"]})
    assert status == 409 and body["error"]["code"] == "avatar_not_ready", body
    status, page = await server.admin("GET", "/v1/sessions?status=active")
    assert page["data"] == []  # nothing was created
    assert await server.control("GET", "/sessions") == []

    status, body = await _start(server, str(uuid.uuid4()))
    assert status == 404 and body["error"]["code"] == "avatar_not_found"
    assert body["error"]["field"] == "avatar.avatarId"

    # an image the engine cannot decode (well-formed PNG chunks, garbage pixels): FAILED, refused too
    await server.control("PATCH", "/config", {"avatarProcessingDelay": "fixed:0.1"})
    bad = png_bytes(raw_rows=b"")  # IDAT holds no rows: PNG structure is fine, decoding fails
    status, failed = await server.admin("POST", "/v1/avatars", avatar_body(
        referenceImage="data:image/png;base64," + base64.b64encode(bad).decode()))
    assert status == 201, failed
    failed = await wait_status(server, failed["id"], "FAILED")
    assert failed["failureReason"]
    status, body = await _start(server, failed["id"])
    assert status == 409 and body["error"]["code"] == "avatar_not_ready" and body["error"]["status"] == "FAILED"


async def test_deleting_an_avatar_ends_its_live_sessions(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, _ = each_mode
    avatar = await make_avatar(server)
    await wait_status(server, avatar["id"], "READY")
    status, created = await _start(server, avatar["id"])
    assert status == 201, created
    other_status, other = await server.admin("POST", "/v1/sessions", {
        "avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}})
    assert other_status == 201
    status, _ = await server.admin("DELETE", f"/v1/avatars/{avatar['id']}")
    assert status == 204
    rec = await server.wait_for(created["id"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "admin"
    status, rec = await server.admin("GET", f"/v1/sessions/{other['id']}")
    assert rec["status"] != "ENDED"  # a session of another avatar runs on
    status, _ = await server.admin("DELETE", f"/v1/sessions/{other['id']}")
    assert status == 200
    status, body = await _start(server, avatar["id"])
    assert status == 404 and body["error"]["code"] == "avatar_not_found"


async def test_a_failed_upstream_delete_keeps_the_avatar_and_its_sessions(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    avatar = await make_avatar(server)
    await wait_status(server, avatar["id"], "READY")
    status, created = await _start(server, avatar["id"])
    assert status == 201, created
    await upstream.control("POST", "/faults", {"rules": [{"op": "avatar_delete", "status": 400}]})
    status, body = await server.admin("DELETE", f"/v1/avatars/{avatar['id']}")
    assert status == 502, body
    await upstream.control("DELETE", "/faults")
    assert (await server.admin("GET", f"/v1/avatars/{avatar['id']}"))[0] == 200
    _, rec = await server.admin("GET", f"/v1/sessions/{created['id']}")
    assert rec["status"] != "ENDED", rec  # the session was not ended for a delete that did not happen
    status, _ = await server.admin("DELETE", f"/v1/avatars/{avatar['id']}")
    assert status == 204
    rec = await server.wait_for(created["id"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "admin"


async def test_avatars_are_admin_only(server: ServerHarness) -> None:
    for method, path in (("GET", "/v1/avatars"), ("POST", "/v1/avatars"), ("GET", f"/v1/avatars/{uuid.uuid4()}"),
                         ("PUT", f"/v1/avatars/{uuid.uuid4()}/documents/{uuid.uuid4()}")):
        status, _, _ = await server.call(method, path, json_body={} if method == "POST" else None)
        assert status == 401, (method, path)


async def test_sessions_need_a_ready_avatar_runway_mode(runway_server: ServerHarness, engine: EngineHarness) -> None:
    await engine.control("PATCH", "/config", {"avatarProcessingDelay": "fixed:30"})
    avatar = await make_avatar(runway_server)
    status, body = await _start(runway_server, avatar["id"])
    assert status == 409 and body["error"]["code"] == "avatar_not_ready", body
    assert await engine.control("GET", "/sessions") == []
    # Runway refuses a new image while the avatar is PROCESSING: a 409 of ours, nothing else
    status, body = await runway_server.admin("PATCH", f"/v1/avatars/{avatar['id']}",
                                             {"referenceImage": avatar_body()["referenceImage"]})
    assert status == 409 and body["error"]["code"] == "avatar_conflict", body
    await engine.control("PATCH", "/config", {"avatarProcessingDelay": "fixed:0.1"})
    ready = await wait_status(runway_server, (await make_avatar(runway_server, name="Quick"))["id"], "READY")
    status, created = await _start(runway_server, ready["id"])
    assert status == 201, created
    rec = await runway_server.wait_for(created["id"], lambda r: r["status"] == "READY")
    assert rec["avatar"] == {"type": "custom", "avatarId": ready["id"]}
    status, _ = await runway_server.admin("DELETE", f"/v1/sessions/{created['id']}")
    assert status == 200
