"""Conversations and usage (``/v1/conversations``, ``/v1/usage``) on both upstreams: the local engine
mounted in the server, and the engine alone standing in for Runway. Real Redis, real HTTP; answers
checked against the server's own OpenAPI schemas, the engine's against Runway's."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema

from avatar_server.api.openapi.cli import spec_for_default_app

from ..catalog_helpers import validate
from ..harness import ServerHarness
from .kb_helpers import Upstream

ORIGIN_A = "https://a.example.com"
ORIGIN_B = "https://b.example.com"
PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}
VERSION = {"X-Runway-Version": "2024-11-06"}


def check(body: Any, model: str) -> None:
    """The body matches the server's published schema for ``model`` (its refs resolved in the document)."""
    spec = spec_for_default_app()
    jsonschema.Draft202012Validator({**spec["components"]["schemas"][model],
                                     "components": spec["components"]}).validate(body)


async def run_session(server: ServerHarness, *, key: str | None = None, origin: str | None = None,
                      hold: float = 0.0) -> str:
    """A session that reaches RUNNING (credentials handed over), then ends (client end)."""
    headers = {"Origin": origin} if origin else None
    status, body, _ = await server.call("POST", "/v1/sessions/connect", token=key or server.settings.admin_token,
                                        json_body={"avatarId": "cooking-teacher"}, headers=headers)
    assert status == 200, body
    if hold:
        await asyncio.sleep(hold)
    status, ended, _ = await server.call("DELETE", f"/v1/sessions/{body['sessionId']}", token=body["clientToken"])
    assert status == 200 and ended["status"] == "ENDED", ended
    return str(body["sessionId"])


async def wait_conversation(server: ServerHarness, conv_id: str, status: str = "ended",
                            timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        code, last = await server.admin("GET", f"/v1/conversations/{conv_id}")
        if code == 200 and last["status"] == status:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"conversation {conv_id} not {status}: {last}")


async def make_site(server: ServerHarness, origin: str) -> dict[str, Any]:
    status, site = await server.admin("POST", "/v1/sites", {"name": origin[8:], "allowedOrigins": [origin],
                                                            "avatarIds": ["cooking-teacher"], "maxConcurrentSessions": 10})
    assert status == 201, site
    return site


async def test_a_finished_session_becomes_a_conversation(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, _ = each_mode
    site = await make_site(server, ORIGIN_A)
    conv_id = await run_session(server, key=site["publishableKey"], origin=ORIGIN_A, hold=1.1)
    conv = await wait_conversation(server, conv_id)
    check(conv, "Conversation")
    _, rec = await server.admin("GET", f"/v1/sessions/{conv_id}")
    assert conv["upstreamId"] == rec["upstreamId"] and conv["siteId"] == site["id"]
    assert conv["avatar"] == PRESET and conv["endReason"] == "client"
    assert conv["durationSeconds"] >= 1 and conv["startedAt"] == rec["startedAt"]
    assert conv["transcript"] == [] and conv["turns"] == 0 and conv["recordingUrl"] is None
    expires = datetime.fromisoformat(conv["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(days=29.9) < expires - datetime.now(UTC) <= timedelta(days=30)

    # a session that never reached RUNNING has none
    status, early = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    assert status == 201
    await server.admin("DELETE", f"/v1/sessions/{early['id']}")
    page = await list_all(server)
    assert [c["id"] for c in page] == [conv_id]


async def list_all(server: ServerHarness, query: str = "", limit: int = 100) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = f"/v1/conversations?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        status, page = await server.admin("GET", path)
        assert status == 200, page
        check(page, "ConversationPage")
        out += page["data"]
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            return out
        cursor = page["nextCursor"]


async def test_filters_and_cursor_pages(server: ServerHarness) -> None:
    a, b = await make_site(server, ORIGIN_A), await make_site(server, ORIGIN_B)
    ids = {"a": [], "b": [], "admin": []}
    for _ in range(3):
        ids["a"].append(await run_session(server, key=a["publishableKey"], origin=ORIGIN_A))
        ids["b"].append(await run_session(server, key=b["publishableKey"], origin=ORIGIN_B))
    ids["admin"].append(await run_session(server))
    everything = await list_all(server, limit=2)  # pages of two, newest first, each once
    assert [c["id"] for c in everything] == list(reversed(
        [ids["a"][0], ids["b"][0], ids["a"][1], ids["b"][1], ids["a"][2], ids["b"][2], ids["admin"][0]]))
    assert {c["id"] for c in await list_all(server, f"&siteId={a['id']}", limit=1)} == set(ids["a"])
    assert [c["id"] for c in await list_all(server, "&siteId=admin")] == ids["admin"]
    assert len(await list_all(server, "&avatarId=cooking-teacher")) == 7
    assert await list_all(server, "&avatarId=cat-character") == []
    assert {c["id"] for c in await list_all(server, f"&siteId={b['id']}&avatarId=cooking-teacher")} == set(ids["b"])
    first = everything[-1]["startedAt"]
    assert [c["id"] for c in await list_all(server, f"&to={first}")] == []  # to is exclusive
    assert len(await list_all(server, f"&from={first}")) == 7
    today = datetime.now(UTC).date().isoformat()
    assert len(await list_all(server, f"&from={today}&to={today}")) == 7
    for bad in ("limit=0", "limit=101", "cursor=nope", "from=yesterday", "siteId=x", "from=2024-01-01T00:00:00",
                f"from={today}T10:00:00Z&to={today}T09:00:00Z"):
        status, err = await server.admin("GET", f"/v1/conversations?{bad}")
        assert status == 422, (bad, err)
    status, err = await server.admin("GET", "/v1/conversations/not-a-uuid")
    assert status == 404 and err["error"]["code"] == "conversation_not_found"


async def test_delete_erases_ours_and_the_upstreams(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, upstream = each_mode
    control = upstream.engine.control if upstream.engine is not None else server.control
    conv_id = await run_session(server)
    conv = await wait_conversation(server, conv_id)
    up_path = f"/v1/avatar_conversations/{conv['upstreamId']}"
    status, up = await upstream.call("GET", up_path)
    assert status == 200 and up["status"] == "ended"
    validate(up, "/v1/avatar_conversations/{id}", "get")

    status, gone = await server.admin("DELETE", f"/v1/conversations/{conv_id}")
    assert status == 200 and gone == {"id": conv_id, "deleted": True, "upstream": "deleted",
                                      "upstreamMessage": None}
    check(gone, "ConversationDeleted")
    assert (await server.admin("GET", f"/v1/conversations/{conv_id}"))[0] == 404
    assert (await upstream.call("GET", up_path))[0] == 404
    assert await list_all(server) == []
    assert (await server.admin("DELETE", f"/v1/conversations/{conv_id}"))[0] == 404

    # the upstream refuses: ours is erased, and the answer says so
    other = await run_session(server)
    await wait_conversation(server, other)
    await control("POST", "/faults", {"rules": [{"op": "conversation_delete", "status": 403}]})
    status, refused = await server.admin("DELETE", f"/v1/conversations/{other}")
    assert status == 200 and refused["upstream"] == "refused" and "403" in refused["upstreamMessage"], refused
    assert (await server.admin("GET", f"/v1/conversations/{other}"))[0] == 404


async def test_retention_expires_conversations(redis_url: str, data_dir: Any) -> None:
    from ..harness import fast_engine_config, make_settings

    settings = make_settings(data_dir, redis_url, conversation_retention_days=2.5 / 86_400)
    server = await ServerHarness(settings, fast_engine_config()).start()
    try:
        conv_id = await run_session(server)
        conv = await wait_conversation(server, conv_id, timeout=2.0)
        assert conv["expiresAt"]
        assert [c["id"] for c in await list_all(server)] == [conv_id]
        await asyncio.sleep(2.8)
        assert (await server.admin("GET", f"/v1/conversations/{conv_id}"))[0] == 404
        assert await list_all(server) == []
        _, usage = await server.admin("GET", "/v1/usage")
        assert usage["totalSessions"] == 1  # the ledger outlives the transcripts
    finally:
        await server.stop_all()


async def test_the_fetch_waits_for_the_upstream_and_gives_up_bounded(server: ServerHarness) -> None:
    """The upstream answers 503 to the first reads: the fetch retries with backoff and gets it."""
    await server.control("POST", "/faults", {"rules": [{"op": "conversation_get", "status": 404, "times": 2}]})
    conv_id = await run_session(server)
    _, early = await server.admin("GET", f"/v1/conversations/{conv_id}")
    assert early["status"] == "pending" and early["transcript"] == []
    check(early, "Conversation")
    await wait_conversation(server, conv_id, timeout=10.0)  # after 1 s, then 1 s and 2 s of backoff


async def test_usage_per_site_day_and_end_reason(each_mode: tuple[ServerHarness, Upstream]) -> None:
    server, _ = each_mode
    a, b = await make_site(server, ORIGIN_A), await make_site(server, ORIGIN_B)
    await run_session(server, key=a["publishableKey"], origin=ORIGIN_A, hold=1.1)
    await run_session(server, key=a["publishableKey"], origin=ORIGIN_A)
    await run_session(server, key=b["publishableKey"], origin=ORIGIN_B)
    admin_id = await run_session(server)
    _, early = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})  # never RUNNING: not counted
    await server.admin("DELETE", f"/v1/sessions/{early['id']}")
    today = datetime.now(UTC).date().isoformat()
    status, usage = await server.admin("GET", f"/v1/usage?from={today}&to={today}")
    assert status == 200, usage
    check(usage, "Usage")
    assert usage["from"] == usage["to"] == today
    assert usage["totalSessions"] == 4 and usage["totalSeconds"] >= 1
    assert usage["byDay"] == [{"date": today, "sessions": 4, "seconds": usage["totalSeconds"]}]
    assert usage["byEndReason"] == {"client": 4}
    sites = {s["siteId"]: s for s in usage["bySite"]}
    assert set(sites) == {a["id"], b["id"], None}
    assert sites[a["id"]]["sessions"] == 2 and sites[a["id"]]["seconds"] >= 1
    assert sites[b["id"]]["sessions"] == 1 and sites[None]["sessions"] == 1
    assert sites[a["id"]]["byDay"] == [{"date": today, "sessions": 2, "seconds": sites[a["id"]]["seconds"]}]
    up = usage["upstream"]
    assert up is not None and up["totalSessions"] == 5  # the upstream counts every session it created
    assert up["byDay"][-1]["date"] == today
    status, one = await server.admin("GET", f"/v1/usage?siteId={b['id']}&from={today}")
    assert one["totalSessions"] == 1 and [s["siteId"] for s in one["bySite"]] == [b["id"]]
    _, admin = await server.admin("GET", "/v1/usage?siteId=admin")
    assert admin["totalSessions"] == 1 and len(admin["byDay"]) == 30
    _, by_avatar = await server.admin("GET", "/v1/usage?avatarId=cat-character")
    assert by_avatar["totalSessions"] == 0
    for bad in ("from=2020-01-01", f"from={today}&to=2020-01-01", "to=never"):
        assert (await server.admin("GET", f"/v1/usage?{bad}"))[0] == 422, bad
    assert admin_id


async def test_usage_without_the_upstream(server: ServerHarness) -> None:
    await run_session(server)
    await server.control("POST", "/faults", {"rules": [{"op": "usage", "status": 400}]})
    status, usage = await server.admin("GET", "/v1/usage")
    assert status == 200 and usage["upstream"] is None and usage["upstreamError"], usage
    assert usage["totalSessions"] == 1


async def test_engine_usage_matches_runways_schema(server: ServerHarness) -> None:
    await run_session(server)
    now = datetime.now(UTC)
    start = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    end = (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    status, usage, _ = await server.call("GET", f"/engine/v1/avatar_usage?startDate={start}&endDate={end}",
                                         token=server.settings.admin_token, headers=VERSION)
    assert status == 200, usage
    validate(usage, "/v1/avatar_usage", "get")
    assert usage["totalSessions"] == 1 and len(usage["byDay"]) == 3
    for bad in ("", f"?startDate={start}", f"?startDate={end}&endDate={start}",
                f"?startDate=2020-01-01T00:00:00Z&endDate={end}"):
        status, err, _ = await server.call("GET", f"/engine/v1/avatar_usage{bad}", token=server.settings.admin_token,
                                           headers=VERSION)
        assert status == 400 and err["error"], (bad, err)
