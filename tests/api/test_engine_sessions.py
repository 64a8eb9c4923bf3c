"""The local engine's Runway-compatible realtime-session API, over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from avatar_server.engine import ENGINE_STATE, Delay, EngineConfig, create_engine_app
from avatar_server.engine.http.rtc import rtc_token_ok
from avatar_server.runway import RealtimeStatus

from ..catalog_helpers import validate

KEY = "engine-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
PRESET = {"model": "gwm1_avatars", "avatar": {"type": "runway-preset", "presetId": "cat-character"}}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}

# Exact wire shape per status (required, optional) from the OpenAPI document.
WIRE_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "NOT_READY": ({"id", "createdAt", "status"}, {"queued"}),
    "READY": ({"id", "createdAt", "status", "expiresAt", "sessionKey"}, set()),
    "RUNNING": ({"id", "createdAt", "status"}, set()),
    "COMPLETED": ({"id", "createdAt", "status", "duration"}, set()),
    "FAILED": ({"id", "createdAt", "status", "failure", "failureCode"}, set()),
    "CANCELLED": ({"id", "createdAt", "status"}, set()),
}


def check_wire(body: dict[str, Any]) -> dict[str, Any]:
    """Required keys present, no key beyond the schema, and the OpenAPI schema itself (when available)."""
    required, optional = WIRE_KEYS[body["status"]]
    keys = set(body)
    assert required <= keys, f"missing {required - keys} in {body}"
    assert keys <= required | optional, f"extra {keys - required - optional} in {body}"
    assert uuid.UUID(body["id"]).version == 4
    assert body["createdAt"].endswith("Z")
    validate(body, "/v1/realtime_sessions/{id}", "get")
    return body


def parse_ts(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


EngineFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_engine(aiohttp_client: Any) -> EngineFactory:
    async def make(*, avatar_lookup: Any = None, public_url: str | None = None, **config: Any) -> TestClient:
        config.setdefault("provisioning_delay", Delay.parse("fixed:0.1"))
        config.setdefault("seed", 1)
        app = create_engine_app(
            EngineConfig(**config), api_keys=lambda: [KEY], public_url=public_url, avatar_lookup=avatar_lookup
        )
        return await aiohttp_client(app)

    return make


async def create(client: TestClient, body: dict[str, Any] | None = None) -> str:
    resp = await client.post("/v1/realtime_sessions", json=body or PRESET, headers=HEADERS)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert set(data) == {"id"}
    validate(data, "/v1/realtime_sessions", "post")
    return data["id"]


async def get(client: TestClient, id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/realtime_sessions/{id}", headers=HEADERS)
    assert resp.status == 200, await resp.text()
    return check_wire(await resp.json())


async def wait_status(client: TestClient, id: str, *statuses: str, within: float = 15.0) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            body = await get(client, id)
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), within)


async def consume(client: TestClient, id: str, key: str) -> aiohttp.ClientResponse:
    return await client.post(
        f"/v1/realtime_sessions/{id}/consume",
        headers={"Authorization": f"Bearer {key}", "X-Runway-Version": "2024-11-06"},
    )


async def control(client: TestClient, method: str, path: str, body: Any = None) -> Any:
    resp = await client.request(method, f"/_control/{path}", json=body, headers=HEADERS)
    assert resp.status in (200, 204), await resp.text()
    return await resp.json() if resp.status == 200 else None


async def assert_error(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert set(body) <= {"error", "issues", "docUrl"}
    return body


# -- lifecycle ---------------------------------------------------------------------------------


async def test_create_provisions_to_ready_with_session_key(make_engine: EngineFactory) -> None:
    client = await make_engine(ready_ttl=30)
    id = await create(client)
    first = await get(client, id)
    assert first["status"] == "NOT_READY" and first["queued"] is False
    ready = await wait_status(client, id, "READY")
    assert isinstance(ready["sessionKey"], str) and len(ready["sessionKey"]) >= 32
    assert ready["createdAt"] == first["createdAt"]
    lifetime = (parse_ts(ready["expiresAt"]) - parse_ts(ready["createdAt"])).total_seconds()
    assert 29 < lifetime < 40


async def test_consume_once_then_409_and_running(make_engine: EngineFactory) -> None:
    client = await make_engine()
    id = await create(client)
    key = (await wait_status(client, id, "READY"))["sessionKey"]

    resp = await consume(client, id, key)
    assert resp.status == 200, await resp.text()
    creds = await resp.json()
    assert set(creds) == {"url", "token", "roomName"}
    assert creds["url"] == str(client.make_url(f"/v1/rtc/{id}"))
    assert creds["token"] and creds["token"] != key and creds["roomName"]
    assert (await get(client, id))["status"] == "READY"  # until its media connects, as Runway's
    assert rtc_token_ok(client.app[ENGINE_STATE].sessions[id], creds["token"])
    assert not rtc_token_ok(client.app[ENGINE_STATE].sessions[id], "nope")

    again = await assert_error(await consume(client, id, key), 409)
    assert again["error"] == "Session already consumed"
    client.app[ENGINE_STATE].mark_connected(id)  # what the media peer calls when media flows
    assert (await get(client, id))["status"] == "RUNNING"
    await assert_error(await consume(client, id, key), 409)
    assert rtc_token_ok(client.app[ENGINE_STATE].sessions[id], creds["token"])


async def test_consumed_but_never_connected_fails(make_engine: EngineFactory) -> None:
    client = await make_engine(connect_grace=0.3)
    id = await create(client)
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    assert (await consume(client, id, key)).status == 200
    failed = await wait_status(client, id, "FAILED")
    assert failed["failureCode"] == "not_connected" and failed["failure"]
    client.app[ENGINE_STATE].mark_connected(id)  # too late: stays FAILED
    assert (await get(client, id))["status"] == "FAILED"


async def test_consume_with_wrong_or_missing_key_is_401(make_engine: EngineFactory) -> None:
    client = await make_engine()
    id = await create(client)
    await assert_error(await consume(client, id, "not-the-key"), 401)  # NOT_READY has no key yet
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    await assert_error(await consume(client, id, "not-the-key"), 401)
    await assert_error(await consume(client, id, KEY), 401)  # the API key is not a session key
    resp = await client.post(f"/v1/realtime_sessions/{id}/consume")
    await assert_error(resp, 401)
    assert (await get(client, id))["status"] == "READY"
    assert (await consume(client, id, key)).status == 200
    await assert_error(await consume(client, str(uuid.uuid4()), key), 404)


async def test_ready_expires_to_failed_and_consume_is_410(make_engine: EngineFactory) -> None:
    client = await make_engine(ready_ttl=0.3)
    id = await create(client)
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    failed = await wait_status(client, id, "FAILED")
    assert failed["failureCode"] == "expired" and failed["failure"]
    await assert_error(await consume(client, id, key), 410)
    assert (await get(client, id))["status"] == "FAILED"


async def test_running_completes_at_duration_limit(make_engine: EngineFactory) -> None:
    client = await make_engine(max_duration_limit=1)
    seen: list[tuple[str | None, str]] = []
    client.app[ENGINE_STATE].add_listener(
        lambda s, old, new: seen.append((old.value if old else None, new.value))
    )
    id = await create(client, {**PRESET, "maxDuration": 10})
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    assert (await consume(client, id, key)).status == 200
    client.app[ENGINE_STATE].mark_connected(id)
    done = await wait_status(client, id, "COMPLETED")
    assert done["duration"] == 1
    assert seen == [
        (None, "NOT_READY"),
        ("NOT_READY", "READY"),
        ("READY", "RUNNING"),
        ("RUNNING", "COMPLETED"),
    ]


async def test_max_duration_is_honoured(make_engine: EngineFactory) -> None:
    client = await make_engine(provisioning_delay=Delay.parse("fixed:0"))
    id = await create(client, {**PRESET, "maxDuration": 10})
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    assert (await consume(client, id, key)).status == 200
    await asyncio.sleep(1)
    assert (await get(client, id))["status"] == "READY"  # maxDuration counts from the media connection
    client.app[ENGINE_STATE].mark_connected(id)
    await asyncio.sleep(8)
    assert (await get(client, id))["status"] == "RUNNING"
    done = await wait_status(client, id, "COMPLETED", within=10)
    assert done["duration"] == 10


async def test_mark_completed_by_media_peer(make_engine: EngineFactory) -> None:
    client = await make_engine()
    id = await create(client)
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    assert (await consume(client, id, key)).status == 200
    state = client.app[ENGINE_STATE]
    state.mark_connected(id)
    state.mark_completed(id)
    body = await get(client, id)
    assert body["status"] == "COMPLETED" and body["duration"] == 0
    state.mark_completed(id)  # no-op on a terminal session
    assert state.get(id).status is RealtimeStatus.COMPLETED
    # a peer that closes before it ever connected: the one-time credentials are spent
    other = await create(client)
    key = (await wait_status(client, other, "READY"))["sessionKey"]
    assert (await consume(client, other, key)).status == 200
    state.mark_completed(other)
    assert (await get(client, other))["failureCode"] == "not_connected"


@pytest.mark.parametrize("stage", ["NOT_READY", "READY", "RUNNING"])
async def test_delete_cancels_and_is_idempotent(make_engine: EngineFactory, stage: str) -> None:
    client = await make_engine()
    id = await create(client)
    if stage != "NOT_READY":
        key = (await wait_status(client, id, "READY"))["sessionKey"]
        if stage == "RUNNING":
            assert (await consume(client, id, key)).status == 200
            client.app[ENGINE_STATE].mark_connected(id)
    assert (await get(client, id))["status"] == stage
    for _ in range(2):
        resp = await client.delete(f"/v1/realtime_sessions/{id}", headers=HEADERS)
        assert resp.status == 204
        assert await resp.read() == b""
    assert (await get(client, id))["status"] == "CANCELLED"
    await asyncio.sleep(0.2)  # a provisioning timer must not revive it
    assert (await get(client, id))["status"] == "CANCELLED"


async def test_unknown_session_is_404(make_engine: EngineFactory) -> None:
    client = await make_engine()
    for method in ("GET", "DELETE"):
        resp = await client.request(method, f"/v1/realtime_sessions/{uuid.uuid4()}", headers=HEADERS)
        await assert_error(resp, 404)
    await assert_error(await client.get("/v1/realtime_sessions/not-a-uuid", headers=HEADERS), 404)


# -- auth, version, validation -----------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic abc", "Bearer "])
async def test_api_key_required(make_engine: EngineFactory, authorization: str | None) -> None:
    client = await make_engine()
    headers = {"X-Runway-Version": "2024-11-06"}
    if authorization is not None:
        headers["Authorization"] = authorization
    await assert_error(await client.post("/v1/realtime_sessions", json=PRESET, headers=headers), 401)
    await assert_error(await client.get(f"/v1/realtime_sessions/{uuid.uuid4()}", headers=headers), 401)
    await assert_error(await client.delete(f"/v1/realtime_sessions/{uuid.uuid4()}", headers=headers), 401)
    await assert_error(await client.get("/_control/sessions", headers=headers), 401)
    assert client.app[ENGINE_STATE].sessions == {}


@pytest.mark.parametrize("version", [None, "2023-01-01"])
async def test_version_header_required(make_engine: EngineFactory, version: str | None) -> None:
    client = await make_engine()
    headers = {"Authorization": f"Bearer {KEY}"}
    if version is not None:
        headers["X-Runway-Version"] = version
    body = await assert_error(await client.post("/v1/realtime_sessions", json=PRESET, headers=headers), 400)
    assert "X-Runway-Version" in body["error"]
    id = await create(client)
    await assert_error(await client.get(f"/v1/realtime_sessions/{id}", headers=headers), 400)


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"model": None}, ["model"]),
        ({"model": "gen4"}, ["model"]),
        ({"avatar": None}, ["avatar"]),
        ({"avatar": {"type": "runway-preset", "presetId": "dragon"}}, ["avatar", "presetId"]),
        ({"avatar": {"type": "robot"}}, ["avatar", "type"]),
        ({"avatar": {"type": "custom", "avatarId": "not-a-uuid"}}, ["avatar", "avatarId"]),
        ({"maxDuration": 9}, ["maxDuration"]),
        ({"maxDuration": 1801}, ["maxDuration"]),
        ({"maxDuration": 30.5}, ["maxDuration"]),
        ({"maxDuration": "60"}, ["maxDuration"]),
        ({"personality": ""}, ["personality"]),
        ({"personality": "x" * 10001}, ["personality"]),
        ({"startScript": "x" * 2001}, ["startScript"]),
        (
            {"tools": [{"type": "client_event", "name": f"t{i}", "description": "d"} for i in range(21)]},
            ["tools"],
        ),
        ({"tools": [{"type": "client_event", "name": "1bad", "description": "d"}]}, ["tools", 0, "name"]),
        ({"tools": [{"type": "webhook", "name": "ok", "description": "d"}]}, ["tools", 0, "type"]),
        (
            {
                "tools": [
                    {"type": "backend_rpc", "name": "ok", "description": "d", "parameters": [{"name": "p"}]}
                ]
            },
            ["tools", 0, "parameters", 0, "description"],
        ),
    ],
)
async def test_validation_400_with_issues(
    make_engine: EngineFactory, patch: dict[str, Any], path: list[Any]
) -> None:
    client = await make_engine()
    body = {**PRESET, **patch}
    body = {k: v for k, v in body.items() if v is not None}
    resp = await client.post("/v1/realtime_sessions", json=body, headers=HEADERS)
    error = await assert_error(resp, 400)
    assert error["issues"], error
    for issue in error["issues"]:
        assert set(issue) == {"code", "path", "message"}
    assert path in [issue["path"] for issue in error["issues"]]
    assert client.app[ENGINE_STATE].sessions == {}


async def test_valid_optional_fields_are_accepted(make_engine: EngineFactory) -> None:
    client = await make_engine()
    tool = {
        "type": "client_event",
        "name": "show_slide",
        "description": "Show a slide",
        "parameters": [
            {"name": "n", "description": "slide", "type": "integer"},
            {"name": "tags", "description": "tags", "type": "array", "items": {"type": "string"}},
        ],
    }
    body = {**PRESET, "maxDuration": 1800, "personality": "kind", "startScript": "Hi!", "tools": [tool]}
    id = await create(client, body)
    session = client.app[ENGINE_STATE].get(id)
    assert (session.max_duration, session.personality, session.start_script) == (1800, "kind", "Hi!")
    assert session.tools == [tool]
    assert client.app[ENGINE_STATE].get(await create(client)).max_duration == 300


async def test_malformed_json_is_400(make_engine: EngineFactory) -> None:
    client = await make_engine()
    resp = await client.post("/v1/realtime_sessions", data=b"{nope", headers=HEADERS)
    await assert_error(resp, 400)
    resp = await client.post("/v1/realtime_sessions", json=[1], headers=HEADERS)
    await assert_error(resp, 400)


async def test_custom_avatars(make_engine: EngineFactory) -> None:
    ready_id, processing_id = str(uuid.uuid4()), str(uuid.uuid4())
    avatars = {
        ready_id: {"id": ready_id, "status": "READY"},
        processing_id: {"id": processing_id, "status": "PROCESSING"},
    }

    async def lookup(avatar_id: str) -> dict[str, Any] | None:
        return avatars.get(avatar_id)

    def custom(avatar_id: str) -> dict[str, Any]:
        return {"model": "gwm1_avatars", "avatar": {"type": "custom", "avatarId": avatar_id}}

    without = await make_engine()
    resp = await without.post("/v1/realtime_sessions", json=custom(ready_id), headers=HEADERS)
    assert "custom avatars are not available" in (await assert_error(resp, 400))["error"]

    client = await make_engine(avatar_lookup=lookup)
    id = await create(client, custom(ready_id))
    assert client.app[ENGINE_STATE].get(id).avatar_record == avatars[ready_id]
    await wait_status(client, id, "READY")
    for other in (processing_id, str(uuid.uuid4())):
        resp = await client.post("/v1/realtime_sessions", json=custom(other), headers=HEADERS)
        await assert_error(resp, 400)
    assert list(client.app[ENGINE_STATE].sessions) == [id]


# -- url of the media endpoint -----------------------------------------------------------------


async def test_consume_url_includes_mount_prefix(aiohttp_client: Any) -> None:
    config = EngineConfig(provisioning_delay=Delay.parse("fixed:0.05"))
    root = web.Application()
    engine = create_engine_app(config, api_keys=lambda: [KEY])
    root.add_subapp("/engine", engine)
    client = await aiohttp_client(root)
    resp = await client.post("/engine/v1/realtime_sessions", json=PRESET, headers=HEADERS)
    id = (await resp.json())["id"]

    async def ready_key() -> str:
        while True:
            body = await (await client.get(f"/engine/v1/realtime_sessions/{id}", headers=HEADERS)).json()
            if body["status"] == "READY":
                return body["sessionKey"]
            await asyncio.sleep(0.02)

    key = await asyncio.wait_for(ready_key(), 10)
    resp = await client.post(
        f"/engine/v1/realtime_sessions/{id}/consume", headers={"Authorization": f"Bearer {key}"}
    )
    assert resp.status == 200
    assert (await resp.json())["url"] == str(client.make_url(f"/engine/v1/rtc/{id}"))


async def test_consume_url_uses_public_url(make_engine: EngineFactory) -> None:
    client = await make_engine(public_url="https://avatars.example.com/")
    id = await create(client)
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    creds = await (await consume(client, id, key)).json()
    assert creds["url"] == f"https://avatars.example.com/v1/rtc/{id}"


# -- capacity ----------------------------------------------------------------------------------


async def test_concurrency_limit_queues_and_dequeues_on_cancel(make_engine: EngineFactory) -> None:
    client = await make_engine(concurrency_limit=1)
    a = await create(client)
    b = await create(client)
    c = await create(client)
    for waiting in (b, c):
        body = await get(client, waiting)
        assert (body["status"], body["queued"]) == ("NOT_READY", True)
    await wait_status(client, a, "READY")  # READY still holds the slot
    assert (await get(client, b))["queued"] is True

    await client.delete(f"/v1/realtime_sessions/{c}", headers=HEADERS)  # a queued one can be cancelled
    assert (await get(client, c))["status"] == "CANCELLED"

    await client.delete(f"/v1/realtime_sessions/{a}", headers=HEADERS)
    body = await get(client, b)
    assert (body["status"], body["queued"]) == ("NOT_READY", False)
    await wait_status(client, b, "READY")
    stats = await control(client, "GET", "stats")
    assert stats["active"] == 1 and stats["queued"] == 0


async def test_running_counts_toward_limit_and_config_patch_frees_capacity(
    make_engine: EngineFactory,
) -> None:
    client = await make_engine(concurrency_limit=1)
    a = await create(client)
    key = (await wait_status(client, a, "READY"))["sessionKey"]
    assert (await consume(client, a, key)).status == 200
    b = await create(client)
    assert (await get(client, b))["queued"] is True
    config = await control(
        client, "PATCH", "config", {"concurrencyLimit": 2, "provisioningDelay": "fixed:0.05"}
    )
    assert config["concurrencyLimit"] == 2 and config["provisioningDelay"] == "fixed:0.05"
    assert (await get(client, b))["queued"] is False
    await wait_status(client, b, "READY")


async def test_completion_frees_a_slot(make_engine: EngineFactory) -> None:
    client = await make_engine(concurrency_limit=1)
    a = await create(client)
    key = (await wait_status(client, a, "READY"))["sessionKey"]
    assert (await consume(client, a, key)).status == 200
    b = await create(client)
    assert (await get(client, b))["queued"] is True
    client.app[ENGINE_STATE].mark_completed(a)
    await wait_status(client, b, "READY")


# -- faults ------------------------------------------------------------------------------------


async def test_fault_429_with_retry_after(make_engine: EngineFactory) -> None:
    client = await make_engine()
    await control(client, "POST", "faults", {"rules": [{"op": "create", "status": 429, "retryAfter": 2}]})
    resp = await client.post("/v1/realtime_sessions", json=PRESET, headers=HEADERS)
    await assert_error(resp, 429)
    assert resp.headers["Retry-After"] == "2"
    assert client.app[ENGINE_STATE].sessions == {}  # "before": the create did not happen
    await create(client)  # times: 1 — spent
    stats = await control(client, "GET", "stats")
    assert stats["requests"]["create"] == 2 and stats["faultsInjected"]["create"] == 1


async def test_fault_503_on_get_and_consume_then_recovers(make_engine: EngineFactory) -> None:
    client = await make_engine()
    id = await create(client)
    await control(
        client,
        "POST",
        "faults",
        {"rules": [{"op": "get", "status": 503, "times": 2}, {"op": "consume", "status": 503}]},
    )
    for _ in range(2):
        resp = await client.get(f"/v1/realtime_sessions/{id}", headers=HEADERS)
        await assert_error(resp, 503)
        assert "Retry-After" not in resp.headers
    key = (await wait_status(client, id, "READY"))["sessionKey"]
    await assert_error(await consume(client, id, key), 503)
    assert (await get(client, id))["status"] == "READY"  # the refused consume did not spend the key
    assert (await consume(client, id, key)).status == 200


async def test_fault_any_op_and_clear(make_engine: EngineFactory) -> None:
    client = await make_engine()
    id = await create(client)
    await control(client, "POST", "faults", {"rules": [{"op": "any", "status": 502, "times": 5}]})
    await assert_error(await client.delete(f"/v1/realtime_sessions/{id}", headers=HEADERS), 502)
    assert len((await control(client, "GET", "faults"))["rules"]) == 1
    await control(client, "DELETE", "faults")
    assert (await control(client, "GET", "faults"))["rules"] == []
    assert (await client.delete(f"/v1/realtime_sessions/{id}", headers=HEADERS)).status == 204


async def test_fault_delay_after_makes_an_ambiguous_create(make_engine: EngineFactory) -> None:
    client = await make_engine()
    await control(client, "POST", "faults", {"rules": [{"op": "create", "when": "after", "delaySeconds": 5}]})
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            "/v1/realtime_sessions", json=PRESET, headers=HEADERS, timeout=aiohttp.ClientTimeout(total=0.3)
        )
    sessions = await control(client, "GET", "sessions")
    assert len(sessions) == 1  # the session exists although the caller never got its id
    assert sessions[0]["status"] in ("NOT_READY", "READY")


async def test_fault_after_with_status_creates_yet_fails(make_engine: EngineFactory) -> None:
    client = await make_engine()
    await control(client, "POST", "faults", {"rules": [{"op": "create", "when": "after", "status": 500}]})
    await assert_error(await client.post("/v1/realtime_sessions", json=PRESET, headers=HEADERS), 500)
    assert len(client.app[ENGINE_STATE].sessions) == 1


async def test_fault_delay_before_is_a_slow_answer(make_engine: EngineFactory) -> None:
    client = await make_engine()
    await control(client, "POST", "faults", {"rules": [{"op": "get", "delaySeconds": 0.2}]})
    id = await create(client)
    assert (await get(client, id))["id"] == id  # answered normally, late


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "poll", "status": 429},
        {"op": "get", "status": 200},
        {"op": "get"},
        {"op": "get", "status": 429, "times": 0},
    ],
)
async def test_bad_fault_rule_is_400(make_engine: EngineFactory, rule: dict[str, Any]) -> None:
    client = await make_engine()
    resp = await client.post("/_control/faults", json={"rules": [rule]}, headers=HEADERS)
    await assert_error(resp, 400)


async def test_fail_next_sessions_fail(make_engine: EngineFactory) -> None:
    client = await make_engine()
    await control(
        client, "POST", "fail-next", {"count": 2, "failureCode": "INTERNAL", "failure": "GPU on fire"}
    )
    failing = [await create(client), await create(client)]
    fine = await create(client)
    for id in failing:
        body = await wait_status(client, id, "FAILED")
        assert (body["failureCode"], body["failure"]) == ("INTERNAL", "GPU on fire")
    await wait_status(client, fine, "READY")


# -- control -----------------------------------------------------------------------------------


async def test_control_sessions_and_config(make_engine: EngineFactory) -> None:
    client = await make_engine()
    id = await create(client)
    await wait_status(client, id, "READY")
    [entry] = await control(client, "GET", "sessions")
    assert set(entry) == {"id", "status", "queued", "consumed", "createdAt", "endedAt", "readyAt"}
    assert entry["id"] == id and entry["status"] == "READY" and entry["consumed"] is False
    assert isinstance(entry["readyAt"], float) and entry["endedAt"] is None
    await client.delete(f"/v1/realtime_sessions/{id}", headers=HEADERS)
    [entry] = await control(client, "GET", "sessions")
    assert entry["status"] == "CANCELLED" and entry["endedAt"].endswith("Z")

    config = await control(client, "PATCH", "config", {"readyTtl": 5, "provisioningDelay": "uniform:1,2"})
    assert config["readyTtl"] == 5 and config["provisioningDelay"] == "uniform:1,2"
    for bad in ({"readyTtl": 0}, {"provisioningDelay": "uniform:2,1"}, {"concurrencyLimit": 0}):
        resp = await client.patch("/_control/config", json=bad, headers=HEADERS)
        await assert_error(resp, 400)
    assert (await control(client, "GET", "config"))["readyTtl"] == 5


async def test_engine_close_is_idempotent_and_stops_timers(make_engine: EngineFactory) -> None:
    client = await make_engine(provisioning_delay=Delay.parse("fixed:0.2"))
    id = await create(client)
    state = client.app[ENGINE_STATE]
    await state.close()
    await state.close()
    await asyncio.sleep(0.3)
    assert state.get(id).status is RealtimeStatus.NOT_READY
    await assert_error(await client.post("/v1/realtime_sessions", json=PRESET, headers=HEADERS), 503)


async def test_runway_python_sdk_talks_to_the_engine(make_engine: EngineFactory) -> None:
    from runwayml import AsyncRunwayML

    client = await make_engine(provisioning_delay=Delay.parse("fixed:0.05"))
    sdk = AsyncRunwayML(api_key=KEY, base_url=str(client.make_url("")).rstrip("/"), max_retries=0)
    try:
        created = await sdk.realtime_sessions.create(
            model="gwm1_avatars", avatar={"type": "runway-preset", "preset_id": "influencer"}
        )

        async def ready() -> Any:
            while True:
                got = await sdk.realtime_sessions.retrieve(created.id)
                if got.status == "READY":
                    return got
                await asyncio.sleep(0.02)

        got = await asyncio.wait_for(ready(), 10)
        assert got.session_key
        await sdk.realtime_sessions.delete(created.id)
        assert (await sdk.realtime_sessions.retrieve(created.id)).status == "CANCELLED"
    finally:
        await sdk.close()
