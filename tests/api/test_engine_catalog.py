"""The local engine's avatars and documents (Runway's /v1/avatars, /v1/documents), over real HTTP,
persisted in the real test Redis."""

from __future__ import annotations

import asyncio
import base64
import uuid
from fractions import Fraction

import av
import numpy as np

from tests.catalog_helpers import (
    AVATAR_KEYS,
    VERSION,
    avatar_body,
    call,
    mean_rgb,
    png_uri,
    validate,
    wait_status,
)
from tests.harness import EngineHarness, ServerHarness, fast_engine_config

DOCUMENT_KEYS = {"id", "name", "type", "usedBy", "content", "createdAt", "updatedAt"}


async def test_data_uri_avatar_goes_processing_then_ready(engine: EngineHarness) -> None:
    status, created = await call(engine, "POST", "/v1/avatars",
                                 avatar_body(startScript="Welcome to Acme!", imageProcessing="none"))
    assert status == 200, created
    validate(created, "/v1/avatars", "post")
    assert set(created) == AVATAR_KEYS
    assert created["status"] == "PROCESSING" and created["processedImageUri"] is None
    assert uuid.UUID(created["id"]).version == 4
    assert created["name"] == "Ada" and created["startScript"] == "Welcome to Acme!"
    assert created["voice"]["type"] == "runway-live-preset" and created["voice"]["presetId"] == "clara"
    assert created["voice"]["name"] and created["voice"]["description"]
    assert created["documentIds"] == [] and created["createdAt"].endswith("Z")

    ready = await wait_status(engine, created["id"], "READY")
    validate(ready, "/v1/avatars/{id}", "get")
    assert set(ready) == AVATAR_KEYS and set(ready["voice"]) == {"type", "presetId", "name", "description"}
    # the image really was decoded: low-resolution previews of the red reference
    for key in ("referenceImageUri", "processedImageUri"):
        assert ready[key].startswith("data:image/jpeg;base64,")
        r, g, b = mean_rgb(ready[key])
        assert r > 150 and g < 80 and b < 80, (key, r, g, b)
    assert len(ready["referenceImageUri"]) < 50_000


async def test_undecodable_image_fails_after_processing(engine: EngineHarness) -> None:
    fake_png = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"not really" * 20).decode()
    status, created = await call(engine, "POST", "/v1/avatars", avatar_body(referenceImage=fake_png))
    assert status == 200 and created["status"] == "PROCESSING"
    failed = await wait_status(engine, created["id"], "FAILED")
    validate(failed, "/v1/avatars/{id}", "get")
    assert set(failed) == AVATAR_KEYS | {"failureReason"}
    assert "decoded" in failed["failureReason"]
    assert failed["processedImageUri"] is None and failed["referenceImageUri"] is None


async def test_https_image_is_not_fetched_and_becomes_ready(engine: EngineHarness) -> None:
    url = "https://images.example.invalid/portrait.png"  # .invalid never resolves: a fetch would fail
    status, created = await call(engine, "POST", "/v1/avatars", avatar_body(referenceImage=url))
    assert status == 200, created
    ready = await wait_status(engine, created["id"], "READY")
    assert ready["referenceImageUri"] == url and ready["processedImageUri"] is None


async def test_replacing_the_image_goes_back_to_processing(engine: EngineHarness) -> None:
    _, created = await call(engine, "POST", "/v1/avatars", avatar_body())
    # while PROCESSING, another image is refused (Runway: 409)
    status, body = await call(engine, "PATCH", f"/v1/avatars/{created['id']}",
                              {"referenceImage": png_uri((20, 200, 40))})
    assert status == 409 and "processing" in body["error"]
    await wait_status(engine, created["id"], "READY")
    status, patched = await call(engine, "PATCH", f"/v1/avatars/{created['id']}",
                                 {"referenceImage": png_uri((20, 200, 40)), "name": "Bea"})
    assert status == 200, patched
    validate(patched, "/v1/avatars/{id}", "patch")
    assert patched["status"] == "PROCESSING" and patched["name"] == "Bea"
    ready = await wait_status(engine, created["id"], "READY")
    r, g, b = mean_rgb(ready["processedImageUri"])
    assert g > 150 and r < 80, (r, g, b)  # the new, green image
    # other fields do not restart processing; startScript null clears it
    status, patched = await call(engine, "PATCH", f"/v1/avatars/{created['id']}",
                                 {"personality": "Calm.", "startScript": None})
    assert status == 200 and patched["status"] == "READY"
    assert patched["personality"] == "Calm." and patched["startScript"] is None
    assert patched["updatedAt"] >= ready["updatedAt"] and patched["createdAt"] == created["createdAt"]


async def test_bodies_are_validated_like_runway(engine: EngineHarness) -> None:
    cases = [
        ({k: v for k, v in avatar_body().items() if k != "voice"}, ["voice"]),
        (avatar_body(name=""), ["name"]),
        (avatar_body(name="x" * 51), ["name"]),
        (avatar_body(personality="p" * 10_001), ["personality"]),
        (avatar_body(startScript="s" * 2001), ["startScript"]),
        (avatar_body(referenceImage="http://example.com/a.png"), ["referenceImage"]),
        (avatar_body(referenceImage="https://e.co/" + "a" * 2048), ["referenceImage"]),
        (avatar_body(voice={"type": "runway-live-preset", "presetId": "nobody"}), ["voice", "presetId"]),
        (avatar_body(voice={"type": "custom", "id": "not-a-uuid"}), ["voice", "id"]),
        (avatar_body(documentIds=["nope"]), ["documentIds", 0]),
        (avatar_body(documentIds=[str(uuid.uuid4()) for _ in range(51)]), ["documentIds"]),
        (avatar_body(imageProcessing="max"), ["imageProcessing"]),
    ]
    for body, path in cases:
        status, answer = await call(engine, "POST", "/v1/avatars", body)
        assert status == 400, (path, answer)
        assert isinstance(answer["error"], str) and answer["issues"][0]["path"] == path, answer
    for body, path in [({}, ["name"]), ({"name": "n", "content": ""}, ["content"]),
                       ({"name": "n" * 256, "content": "c"}, ["name"]),
                       ({"name": "n", "content": "c" * 200_001}, ["content"])]:
        status, answer = await call(engine, "POST", "/v1/documents", body)
        assert status == 400 and answer["issues"][0]["path"] == path, answer
    # nothing was stored by any refused request
    assert (await call(engine, "GET", "/v1/avatars?limit=100"))[1]["data"] == []
    assert (await call(engine, "GET", "/v1/documents?limit=100"))[1]["data"] == []
    # an empty PATCH is refused, malformed JSON too
    _, doc = await call(engine, "POST", "/v1/documents", {"name": "n", "content": "c"})
    assert (await call(engine, "PATCH", f"/v1/documents/{doc['id']}", {}))[0] == 400
    status, _, _ = await engine.call("POST", "/v1/documents", token=engine.key, data=b"{oops",
                                     headers={**VERSION, "Content-Type": "application/json"})
    assert status == 400


async def test_auth_version_and_unknown_ids(engine: EngineHarness) -> None:
    status, body, _ = await engine.call("GET", "/v1/avatars", headers=VERSION)
    assert status == 401 and "error" in body
    status, body, _ = await engine.call("GET", "/v1/documents", token="wrong", headers=VERSION)
    assert status == 401
    status, body, _ = await engine.call("GET", "/v1/avatars", token=engine.key)
    assert status == 400 and "X-Runway-Version" in body["error"]
    for path in (f"/v1/avatars/{uuid.uuid4()}", f"/v1/documents/{uuid.uuid4()}", "/v1/avatars/not-a-uuid"):
        status, body = await call(engine, "GET", path)
        assert status == 404 and isinstance(body["error"], str), (path, body)
    assert (await call(engine, "DELETE", f"/v1/avatars/{uuid.uuid4()}"))[0] == 404
    assert (await call(engine, "PATCH", f"/v1/documents/{uuid.uuid4()}", {"name": "x"}))[0] == 404


async def test_documents_usedby_patch_204_and_detach_on_delete(engine: EngineHarness) -> None:
    status, doc = await call(engine, "POST", "/v1/documents", {"name": "hours.md", "content": "Open 9 to 5."})
    assert status == 200
    validate(doc, "/v1/documents", "post")
    assert set(doc) == DOCUMENT_KEYS
    assert doc["type"] == "text" and doc["usedBy"] == [] and doc["content"] == "Open 9 to 5."
    _, other = await call(engine, "POST", "/v1/documents", {"name": "other.md", "content": "Other."})

    # a link to a document that does not exist is refused and writes nothing
    missing = str(uuid.uuid4())
    status, body = await call(engine, "POST", "/v1/avatars", avatar_body(documentIds=[doc["id"], missing]))
    assert status == 400 and body["issues"][0]["path"] == ["documentIds", 1], body
    assert (await call(engine, "GET", "/v1/avatars?limit=100"))[1]["data"] == []

    _, avatar = await call(engine, "POST", "/v1/avatars", avatar_body(documentIds=[doc["id"], other["id"]]))
    assert avatar["documentIds"] == [doc["id"], other["id"]]
    ready = await wait_status(engine, avatar["id"], "READY")
    status, got = await call(engine, "GET", f"/v1/documents/{doc['id']}")
    validate(got, "/v1/documents/{id}", "get")
    assert set(got) == DOCUMENT_KEYS and set(got["usedBy"][0]) == {"id", "name", "imageUrl"}
    assert got["usedBy"] == [{"id": avatar["id"], "name": "Ada", "imageUrl": ready["processedImageUri"]}]

    # PATCH answers 204 with no body, and the change is there
    status, body, _ = await engine.call("PATCH", f"/v1/documents/{doc['id']}", token=engine.key,
                                        json_body={"name": "hours-v2.md", "content": "Open 8 to 6."},
                                        headers=VERSION)
    assert status == 204 and body is None
    _, got = await call(engine, "GET", f"/v1/documents/{doc['id']}")
    assert got["name"] == "hours-v2.md" and got["content"] == "Open 8 to 6."
    assert got["updatedAt"] >= got["createdAt"] and got["createdAt"] == doc["createdAt"]

    # documentIds replaces the list; usedBy follows
    status, patched = await call(engine, "PATCH", f"/v1/avatars/{avatar['id']}", {"documentIds": [other["id"]]})
    assert status == 200 and patched["documentIds"] == [other["id"]]
    assert (await call(engine, "GET", f"/v1/documents/{doc['id']}"))[1]["usedBy"] == []
    # deleting a document detaches it from every avatar
    assert (await call(engine, "DELETE", f"/v1/documents/{other['id']}"))[0] == 204
    assert (await call(engine, "GET", f"/v1/avatars/{avatar['id']}"))[1]["documentIds"] == []
    assert (await call(engine, "GET", f"/v1/documents/{other['id']}"))[0] == 404
    # deleting an avatar removes it from usedBy
    await call(engine, "PATCH", f"/v1/avatars/{avatar['id']}", {"documentIds": [doc["id"]]})
    assert len((await call(engine, "GET", f"/v1/documents/{doc['id']}"))[1]["usedBy"]) == 1
    status, body, _ = await engine.call("DELETE", f"/v1/avatars/{avatar['id']}", token=engine.key,
                                        headers=VERSION)
    assert status == 204 and body is None
    assert (await call(engine, "GET", f"/v1/avatars/{avatar['id']}"))[0] == 404
    assert (await call(engine, "GET", f"/v1/documents/{doc['id']}"))[1]["usedBy"] == []


async def _walk(engine: EngineHarness, path: str, limit: int, during: object = None) -> list[str]:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, page = await call(engine, "GET", url)
        assert status == 200, page
        assert set(page) == {"data", "hasMore", "nextCursor"}
        assert len(page["data"]) <= limit
        seen += [item["id"] for item in page["data"]]
        pages += 1
        if during is not None and pages == 1:
            await during()  # type: ignore[operator]
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            return seen
        cursor = page["nextCursor"]


async def test_pagination_walks_every_item_once_under_inserts_and_deletes(engine: EngineHarness) -> None:
    docs = []
    for i in range(7):
        _, d = await call(engine, "POST", "/v1/documents", {"name": f"d{i}", "content": f"content {i}"})
        docs.append(d["id"])
    status, page = await call(engine, "GET", "/v1/documents?limit=3")
    validate(page, "/v1/documents", "get")
    assert all(set(item) == DOCUMENT_KEYS - {"content"} for item in page["data"])
    # default order: newest first; asc reverses it
    assert await _walk(engine, "/v1/documents", 3) == docs[::-1]
    assert await _walk(engine, "/v1/documents?order=asc", 2) == docs

    async def churn() -> None:  # after the first page: delete a seen and an unseen item, add one
        await call(engine, "DELETE", f"/v1/documents/{docs[0]}")
        await call(engine, "DELETE", f"/v1/documents/{docs[5]}")
        await call(engine, "POST", "/v1/documents", {"name": "late", "content": "late"})

    seen = await _walk(engine, "/v1/documents?order=asc", 3, during=churn)
    assert len(seen) == len(set(seen))
    survivors = set(docs) - {docs[0], docs[5]}
    assert survivors <= set(seen) and docs[5] not in seen

    # sort=updatedAt puts the last edited document last (asc)
    await call(engine, "PATCH", f"/v1/documents/{docs[1]}", {"content": "edited"})
    by_update = await _walk(engine, "/v1/documents?sort=updatedAt&order=asc", 4)
    assert by_update[-1] == docs[1]

    for bad in ("limit=0", "limit=101", "limit=x", "sort=name", "order=up", "cursor=%%%", "cursor=abc"):
        status, body = await call(engine, "GET", f"/v1/documents?{bad}")
        assert status == 400 and body["issues"], (bad, body)
    _, first = await call(engine, "GET", "/v1/documents?limit=1")
    status, body = await call(engine, "GET", f"/v1/documents?limit=1&order=asc&cursor={first['nextCursor']}")
    assert status == 400  # a cursor belongs to its own sort/order

    avatars = []
    for i in range(5):
        _, a = await call(engine, "POST", "/v1/avatars", avatar_body(name=f"A{i}"))
        avatars.append(a["id"])
    _, page = await call(engine, "GET", "/v1/avatars?limit=2")
    validate(page, "/v1/avatars", "get")
    assert await _walk(engine, "/v1/avatars", 2) == avatars[::-1]


async def test_catalog_survives_an_engine_restart(redis_url: str) -> None:
    first = await EngineHarness(fast_engine_config(), redis_url=redis_url).start()
    try:
        _, doc = await call(first, "POST", "/v1/documents", {"name": "faq.md", "content": "Yes."})
        _, avatar = await call(first, "POST", "/v1/avatars", avatar_body(documentIds=[doc["id"]]))
        _, processing = await call(first, "POST", "/v1/avatars", avatar_body(name="Slow"))
    finally:
        await first.stop()  # stopped while the second avatar is PROCESSING
    again = await EngineHarness(fast_engine_config(), redis_url=redis_url).start()
    try:
        ready = await wait_status(again, avatar["id"], "READY")
        assert {k: v for k, v in ready.items() if k not in ("status", "processedImageUri")} == {
            k: v for k, v in avatar.items() if k not in ("status", "processedImageUri")}
        await wait_status(again, processing["id"], "READY")
        _, got_doc = await call(again, "GET", f"/v1/documents/{doc['id']}")
        assert got_doc["content"] == "Yes." and got_doc["usedBy"][0]["id"] == avatar["id"]
        # and a custom-avatar session works on the new engine
        status, session = await call(again, "POST", "/v1/realtime_sessions",
                                     {"model": "gwm1_avatars", "avatar": {"type": "custom", "avatarId": avatar["id"]}})
        assert status == 200, session
        await call(again, "DELETE", f"/v1/realtime_sessions/{session['id']}")
    finally:
        await again.stop()


async def test_embedded_engine_keeps_its_catalog_in_the_server_redis(server: ServerHarness) -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)  # ~360 KB as PNG: beyond 64 KB bodies
    frame = av.VideoFrame.from_ndarray(noise, format="rgb24")
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 400, 300, "rgb24", Fraction(1, 25)
    image = "data:image/png;base64," + base64.b64encode(
        b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])).decode()
    assert len(image) > 300_000
    status, avatar, _ = await server.call("POST", "/engine/v1/avatars", token=server.settings.admin_token,
                                          json_body=avatar_body(referenceImage=image), headers=VERSION)
    assert status == 200, avatar
    await server.restart()
    status, got, _ = await server.call("GET", f"/engine/v1/avatars/{avatar['id']}",
                                       token=server.settings.admin_token, headers=VERSION)
    assert status == 200 and got["id"] == avatar["id"] and got["name"] == "Ada"


async def test_custom_avatar_sessions(engine: EngineHarness) -> None:
    def session_body(avatar_id: str) -> dict[str, object]:
        return {"model": "gwm1_avatars", "avatar": {"type": "custom", "avatarId": avatar_id}}

    status, body = await call(engine, "POST", "/v1/realtime_sessions", session_body(str(uuid.uuid4())))
    assert status == 400 and "not found" in body["error"] and body["issues"][0]["path"] == ["avatar", "avatarId"]

    _, avatar = await call(engine, "POST", "/v1/avatars", avatar_body())
    status, body = await call(engine, "POST", "/v1/realtime_sessions", session_body(avatar["id"]))
    assert status == 400 and "not ready" in body["error"], body  # still PROCESSING

    await wait_status(engine, avatar["id"], "READY")
    status, created = await call(engine, "POST", "/v1/realtime_sessions", session_body(avatar["id"]))
    assert status == 200, created
    status, session = await call(engine, "GET", f"/v1/realtime_sessions/{created['id']}")
    assert status == 200 and session["status"] in ("NOT_READY", "READY")

    fake = "data:image/png;base64," + base64.b64encode(b"GIF89a" * 10).decode()
    _, broken = await call(engine, "POST", "/v1/avatars", avatar_body(referenceImage=fake))
    await wait_status(engine, broken["id"], "FAILED")
    status, body = await call(engine, "POST", "/v1/realtime_sessions", session_body(broken["id"]))
    assert status == 400 and "FAILED" in body["error"]
    assert (await call(engine, "DELETE", f"/v1/realtime_sessions/{created['id']}"))[0] == 204


async def test_avatar_delay_is_a_control_setting(engine: EngineHarness) -> None:
    config = await engine.control("PATCH", "/config", {"avatarProcessingDelay": "fixed:30"})
    assert config["avatarProcessingDelay"] == "fixed:30"
    _, avatar = await call(engine, "POST", "/v1/avatars", avatar_body())
    _, got = await call(engine, "GET", f"/v1/avatars/{avatar['id']}")
    assert got["status"] == "PROCESSING"
    status, _, _ = await engine.call("PATCH", "/_control/config", token=engine.key,
                                     json_body={"avatarProcessingDelay": "soon"})
    assert status == 400


async def test_links_and_usedby_stay_consistent_under_concurrent_changes(engine: EngineHarness) -> None:
    docs = [(await call(engine, "POST", "/v1/documents", {"name": f"d{i}", "content": "x"}))[1]["id"]
            for i in range(6)]
    avatars = [(await call(engine, "POST", "/v1/avatars", avatar_body(name=f"A{i}")))[1]["id"] for i in range(3)]

    async def link(avatar_id: str, ids: list[str]) -> None:
        status, body = await call(engine, "PATCH", f"/v1/avatars/{avatar_id}", {"documentIds": ids})
        assert status in (200, 400), body  # 400: one of the documents was deleted first

    tasks = [link(a, docs[i % 2::2] if i % 2 else docs) for i, a in enumerate(avatars) for _ in range(3)]
    tasks += [call(engine, "DELETE", f"/v1/documents/{d}") for d in docs[:3]]
    await asyncio.gather(*tasks)

    alive = {d for d in docs if (await call(engine, "GET", f"/v1/documents/{d}"))[0] == 200}
    assert alive == set(docs[3:])
    links = {a: (await call(engine, "GET", f"/v1/avatars/{a}"))[1]["documentIds"] for a in avatars}
    for a, ids in links.items():
        assert set(ids) <= alive, (a, ids)  # no avatar keeps a deleted document
    for d in alive:
        used_by = {u["id"] for u in (await call(engine, "GET", f"/v1/documents/{d}"))[1]["usedBy"]}
        assert used_by == {a for a, ids in links.items() if d in ids}
