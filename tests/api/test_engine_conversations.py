"""The local engine's conversations (``/v1/avatar_conversations``), over real HTTP, checked
against Runway's OpenAPI schemas: one per realtime session, with its id."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from avatar_server.engine import ENGINE_STATE, Delay, EngineConfig, create_engine_app
from avatar_server.upstream import UpstreamClient

from ..catalog_helpers import validate

KEY = "engine-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
LIST = "/v1/avatar_conversations"
ITEM = "/v1/avatar_conversations/{id}"
CUSTOM_ID = str(uuid.uuid4())
TOOL = {"type": "client_event", "name": "show_recipe", "description": "Shows the recipe on the page."}


def body(preset: str = "cat-character", **kw: Any) -> dict[str, Any]:
    return {"model": "gwm1_avatars", "avatar": {"type": "runway-preset", "presetId": preset}, **kw}


async def lookup(avatar_id: str) -> dict[str, Any] | None:
    if avatar_id.lower() != CUSTOM_ID:
        return None
    return {"id": CUSTOM_ID, "name": "Ada", "status": "READY", "processedImageUri": "data:image/jpeg;base64,AA=="}


@pytest.fixture
def make_engine(aiohttp_client: Any) -> Callable[..., Awaitable[TestClient]]:
    async def make(**config: Any) -> TestClient:
        config.setdefault("provisioning_delay", Delay.parse("fixed:0.1"))
        config.setdefault("seed", 1)
        app = create_engine_app(EngineConfig(**config), api_keys=lambda: [KEY], avatar_lookup=lookup)
        return await aiohttp_client(app)

    return make


async def create(client: TestClient, payload: dict[str, Any] | None = None) -> str:
    resp = await client.post("/v1/realtime_sessions", json=payload or body(), headers=HEADERS)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["id"]


async def call(client: TestClient, method: str, path: str, **params: Any) -> tuple[int, Any]:
    resp = await client.request(method, path, params=params or None, headers=HEADERS)
    return resp.status, (await resp.json() if resp.content_type == "application/json" else None)


async def listing(client: TestClient, **params: Any) -> dict[str, Any]:
    status, page = await call(client, "GET", LIST, **params)
    assert status == 200, page
    validate(page, LIST, "get")
    return page


async def conversation(client: TestClient, id: str) -> dict[str, Any]:
    status, data = await call(client, "GET", f"{LIST}/{id}")
    assert status == 200, data
    validate(data, ITEM, "get")
    return data


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_one_conversation_per_session_in_each_status(make_engine: Any) -> None:
    client = await make_engine(connect_grace=5)
    state = client.app[ENGINE_STATE]
    fail = await client.post("/_control/fail-next", json={"count": 1}, headers=HEADERS)
    assert fail.status == 200, await fail.text()
    failed = await create(client)
    running = await create(client, body("cooking-teacher", maxDuration=60, tools=[TOOL]))
    cancelled = await create(client)
    waiting = await create(client, {"model": "gwm1_avatars", "avatar": {"type": "custom", "avatarId": CUSTOM_ID}})
    assert (await call(client, "DELETE", f"/v1/realtime_sessions/{cancelled}"))[0] == 204
    for _ in range(100):
        if state.sessions[running].status.value == "READY" and state.sessions[failed].status.value == "FAILED":
            break
        await asyncio.sleep(0.02)
    state.consume(running, state.sessions[running].session_key or "")
    state.mark_connected(running)

    page = await listing(client)
    assert [c["id"] for c in page["data"]] == [waiting, cancelled, running, failed]  # newest first
    assert page["hasMore"] is False and page["nextCursor"] is None
    by_id = {c["id"]: c for c in page["data"]}
    assert by_id[failed]["status"] == "failed" and by_id[cancelled]["status"] == "ended"
    assert by_id[running]["status"] == "in_progress" and by_id[running]["hasTools"] is True
    assert by_id[running]["avatar"] == {"type": "runway-preset", "presetId": "cooking-teacher",
                                        "name": "Cooking Teacher"}
    assert by_id[waiting]["avatar"] == {"type": "custom", "id": CUSTOM_ID, "name": "Ada"}

    live = await conversation(client, running)
    assert live["status"] == "in_progress" and live["maxDuration"] == 60 and live["startedAt"]
    assert live["tools"] == [TOOL] and live["transcript"] == [] and live["recordingUrl"] is None
    assert "endedAt" not in live
    gone = await conversation(client, failed)
    assert gone["failureCode"] == "provisioning_failed" and gone["endedAt"] and gone["startedAt"] is None
    custom = await conversation(client, waiting)
    assert custom["avatar"] == {"type": "custom", "id": CUSTOM_ID, "name": "Ada", "imageUrl": None}
    state.mark_completed(running)
    done = await conversation(client, running)
    assert done["status"] == "ended" and done["endedAt"] and done["duration"] == 0
    assert (await conversation(client, cancelled))["duration"] is None


async def test_dates_filter_and_cursor_pages(make_engine: Any) -> None:
    client = await make_engine()
    ids = [await create(client) for _ in range(5)]
    created = {s.id: s.created_at for s in client.app[ENGINE_STATE].sessions.values()}
    # startDate inclusive, endDate exclusive, on createdAt
    start, end = created[ids[1]], created[ids[4]]
    page = await listing(client, startDate=stamp(start), endDate=stamp(end))
    inside = [i for i in ids if stamp(start) <= stamp(created[i]) < stamp(end)]
    assert {c["id"] for c in page["data"]} == set(inside) and ids[1] in inside and ids[4] not in inside
    future = datetime.now(UTC) + timedelta(minutes=1)
    assert (await listing(client, startDate=future.strftime("%Y-%m-%dT%H:%MZ")))["data"] == []

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await listing(client, **params)
        assert len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        cursor = page["nextCursor"]
        assert page["hasMore"] is (cursor is not None)
        if not cursor:
            break
    assert seen == ids[::-1]
    assert [c["id"] for c in (await listing(client, avatar=CUSTOM_ID))["data"]] == []


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "@@"},
                                    {"avatar": "not-a-uuid"}, {"startDate": "2025-01-01"},
                                    {"endDate": "2025-01-01T00:00:00+01:00"}])
async def test_bad_queries_are_400_with_issues(make_engine: Any, params: dict[str, str]) -> None:
    client = await make_engine()
    status, data = await call(client, "GET", LIST, **params)
    assert status == 400, data
    assert data["issues"][0]["path"] == [next(iter(params))] and data["error"]


async def test_get_and_delete(make_engine: Any) -> None:
    client = await make_engine()
    id = await create(client)
    assert (await call(client, "GET", f"{LIST}/{uuid.uuid4()}"))[0] == 404
    status, data = await call(client, "DELETE", f"{LIST}/{id}")
    assert status == 409 and "in progress" in data["error"]  # a live session is not hidden
    assert (await call(client, "DELETE", f"/v1/realtime_sessions/{id}"))[0] == 204
    assert (await call(client, "DELETE", f"{LIST}/{id}"))[0] == 204
    assert (await call(client, "GET", f"{LIST}/{id}"))[0] == 404
    assert (await call(client, "DELETE", f"{LIST}/{id}"))[0] == 404
    assert (await listing(client))["data"] == []
    assert (await call(client, "GET", f"/v1/realtime_sessions/{id}"))[1]["status"] == "CANCELLED"
    resp = await client.get(LIST, headers={"X-Runway-Version": "2024-11-06"})
    assert resp.status == 401
    resp = await client.get(LIST, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status == 400  # the version header is required, as on every Runway route


async def test_faults_apply_to_conversation_routes(make_engine: Any) -> None:
    client = await make_engine()
    resp = await client.post("/_control/faults", json={"rules": [{"op": "conversation_list", "status": 503}]},
                             headers=HEADERS)
    assert resp.status == 200, await resp.text()
    assert (await call(client, "GET", LIST))[0] == 503
    assert (await call(client, "GET", LIST))[0] == 200
    stats = (await call(client, "GET", "/_control/stats"))[1]
    assert stats["requests"]["conversation_list"] == 2 and stats["faultsInjected"]["conversation_list"] == 1


async def test_upstream_client_lists_a_window(make_engine: Any) -> None:
    """The server's client speaks the same query (dates in Runway's form, cursor, limit)."""
    client = await make_engine()
    before = time.time()
    ids = [await create(client, body("influencer")) for _ in range(3)]
    async with UpstreamClient(base_url=str(client.make_url("")), api_secret=KEY) as upstream:
        first = await upstream.list_conversations(before - 1, limit=2)
        assert [c["id"] for c in first["data"]] == ids[:0:-1] and first["hasMore"] is True
        rest = await upstream.list_conversations(before - 1, limit=2, cursor=first["nextCursor"])
        assert [c["id"] for c in rest["data"]] == ids[:1] and rest["hasMore"] is False
        assert (await upstream.list_conversations(before - 1, before - 0.5))["data"] == []
        later = datetime.now(UTC) + timedelta(seconds=5)
        assert (await upstream.list_conversations(later))["data"] == []
