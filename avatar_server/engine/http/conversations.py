"""The engine's conversations: Runway's ``/v1/avatar_conversations``, one per realtime session.

    GET    /v1/avatar_conversations?limit&cursor&avatar&startDate&endDate
                                          200 {data, hasMore, nextCursor}   newest first
    GET    /v1/avatar_conversations/{id}  200 conversation (status-discriminated)
    DELETE /v1/avatar_conversations/{id}  204

As on Runway, a conversation's id is its realtime session's id; every session the engine
created has one (NOT_READY, READY and RUNNING are ``in_progress``; COMPLETED and CANCELLED
``ended``; FAILED ``failed``). ``startDate`` is inclusive and ``endDate`` exclusive, on
``createdAt``; ``avatar`` keeps the sessions of one custom avatar. Shapes are exactly the
OpenAPI document's (no key beyond it, nullable keys always present). The transcript is what
the media peer had: each visitor message as the engine understood it (``user``; the data
channel's text) and each answer the avatar spoke (``assistant``, the start script included),
with the time it happened, at most 1,000 turns. ``recordingUrl`` is null (nothing is recorded).

    GET    /v1/avatar_usage?startDate&endDate  200 {totalSeconds, totalSessions, avgDurationSeconds, byDay}

Usage counts the sessions *created* in ``[startDate, endDate)`` (both required, at most 90 days
apart), by UTC day; seconds are the measured durations (sessions that never connected count as
sessions with no seconds), every day of the range listed, zeroes included.

Decisions where Runway's material is silent:

- DELETE of an ``in_progress`` conversation answers 409 (cancel the realtime session
  first): the engine will not hide a session that is still alive. A deleted conversation
  answers 404 afterwards (its realtime session stays readable).
- ``name`` is generated: ``"<avatar name> · <createdAt, to the minute> UTC"``.
- ``duration`` (whole seconds) counts from when the media connected; null before that.

Same auth, version header and error shape as the realtime-session routes; every route
honours injected faults (ops ``conversation_list``, ``conversation_get``,
``conversation_delete``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from avatar_server.engine.errors import EngineError
from avatar_server.engine.http.faults import guarded
from avatar_server.engine.state import EngineSession, EngineState
from avatar_server.engine.validation import Issues
from avatar_server.runway import UUID4, RealtimeStatus, iso_ms

TRANSCRIPT_MAX = 1000  # the schema's maxItems
LIMIT_DEFAULT = 20
LIMIT_MAX = 100
CURSOR_MAX = 1000

_STATUS = {
    RealtimeStatus.NOT_READY: "in_progress",
    RealtimeStatus.READY: "in_progress",
    RealtimeStatus.RUNNING: "in_progress",
    RealtimeStatus.COMPLETED: "ended",
    RealtimeStatus.CANCELLED: "ended",
    RealtimeStatus.FAILED: "failed",
}

DELETED = web.AppKey("engine_deleted_conversations", set)


def add_conversation_routes(app: web.Application, state: EngineState) -> None:
    deleted: set[str] = set()
    app[DELETED] = deleted

    def visible(session: EngineSession | None) -> bool:
        return session is not None and session.id not in deleted

    route = guarded

    def find(request: web.Request) -> EngineSession:
        session = state.sessions.get(request.match_info["id"])
        if session is None or not visible(session):
            raise EngineError(404, "Conversation not found")
        return session

    async def list_conversations(request: web.Request) -> web.StreamResponse:
        query = parse_query(request.query)
        deleted.intersection_update(state.sessions)  # sessions the engine pruned are gone anyway
        sessions = [s for s in state.sessions.values() if visible(s) and query.admits(s)]
        sessions.sort(key=_order, reverse=True)
        if query.after is not None:
            sessions = [s for s in sessions if _order(s) < query.after]
        page = sessions[: query.limit]
        more = len(sessions) > len(page)
        return web.json_response({
            "data": [list_item(s) for s in page],
            "hasMore": more,
            "nextCursor": encode_cursor(_order(page[-1])) if more and page else None,
        })

    async def get_conversation(request: web.Request) -> web.StreamResponse:
        return web.json_response(detail(find(request)))

    async def delete_conversation(request: web.Request) -> web.StreamResponse:
        session = find(request)
        if not session.status.is_terminal:
            raise EngineError(409, "Conversation is in progress: cancel its realtime session first")
        deleted.add(session.id)
        return web.Response(status=204)

    async def usage(request: web.Request) -> web.StreamResponse:
        start, end = parse_usage_query(request.query)
        return web.json_response(usage_of(state.sessions.values(), start, end))

    app.router.add_get("/v1/avatar_usage", route("usage", usage), allow_head=False)
    app.router.add_get("/v1/avatar_conversations", route("conversation_list", list_conversations),
                       allow_head=False)
    app.router.add_get("/v1/avatar_conversations/{id}", route("conversation_get", get_conversation),
                       allow_head=False)
    app.router.add_delete("/v1/avatar_conversations/{id}", route("conversation_delete", delete_conversation))


# -- the query ---------------------------------------------------------------------------------


class ConversationQuery:
    def __init__(self, *, limit: int, after: tuple[float, str] | None, avatar: str | None,
                 start: float | None, end: float | None) -> None:
        self.limit = limit
        self.after = after
        self.avatar = avatar
        self.start = start
        self.end = end

    def admits(self, s: EngineSession) -> bool:
        if self.start is not None and s.created_at < self.start:
            return False
        if self.end is not None and s.created_at >= self.end:
            return False
        if self.avatar is not None:
            return s.avatar.get("type") == "custom" and str(s.avatar.get("avatarId", "")).lower() == self.avatar
        return True


def parse_query(query: Mapping[str, str]) -> ConversationQuery:
    """``limit`` (1–100, default 20), ``cursor``, ``avatar`` (uuid), ``startDate``/``endDate``
    (ISO-8601 ending in ``Z``); a bad one answers 400 with issues, like Runway's validation."""
    issues = Issues()
    limit = issues.query_limit(query, LIMIT_DEFAULT, LIMIT_MAX)
    after = None
    if "cursor" in query:
        cursor = query["cursor"]
        after = decode_cursor(cursor) if 1 <= len(cursor) <= CURSOR_MAX else None
        if after is None:
            issues.add("custom", ["cursor"], "Invalid cursor")
    avatar = query.get("avatar")
    if avatar is not None and not UUID4.match(avatar):
        issues.add("invalid_string", ["avatar"], "Invalid uuid")
    dates: dict[str, float | None] = {}
    for name in ("startDate", "endDate"):
        dates[name] = None
        if name in query:
            dates[name] = parse_date(query[name])
            if dates[name] is None:
                issues.add("invalid_string", [name], "Invalid datetime")
    if issues.items:
        first = issues.items[0]
        raise EngineError(400, f"Invalid query: {first['path'][0]}: {first['message']}", issues.items)
    return ConversationQuery(limit=limit, after=after, avatar=avatar.lower() if avatar else None,
                             start=dates["startDate"], end=dates["endDate"])


def parse_date(text: str) -> float | None:
    """An ISO-8601 UTC date-time ending in ``Z`` (seconds and fraction optional) → epoch seconds."""
    if not text.endswith("Z") or "T" not in text:
        return None
    try:
        parsed = datetime.fromisoformat(text[:-1])
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        return None
    return parsed.replace(tzinfo=UTC).timestamp()


def _order(s: EngineSession) -> tuple[float, str]:
    return (s.created_at, s.id)


def encode_cursor(position: tuple[float, str]) -> str:
    raw = json.dumps({"t": position[0], "i": position[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    t, i = value.get("t"), value.get("i")
    if not isinstance(t, int | float) or isinstance(t, bool) or not isinstance(i, str):
        return None
    return (float(t), i)


# -- usage --------------------------------------------------------------------------------------

USAGE_MAX_DAYS = 90
_DAY = 86_400


def parse_usage_query(query: Mapping[str, str]) -> tuple[float, float]:
    """``startDate`` (inclusive) and ``endDate`` (exclusive), both required, ``endDate`` after
    ``startDate`` and at most 90 days later; else 400 with issues."""
    issues = Issues()
    dates: dict[str, float | None] = {}
    for name in ("startDate", "endDate"):
        dates[name] = parse_date(query[name]) if name in query else None
        if name not in query:
            issues.add("invalid_type", [name], "Required")
        elif dates[name] is None:
            issues.add("invalid_string", [name], "Invalid datetime")
    start, end = dates["startDate"], dates["endDate"]
    if start is not None and end is not None:
        if end <= start:
            issues.add("custom", ["endDate"], "endDate must be after startDate")
        elif end - start > USAGE_MAX_DAYS * _DAY:
            issues.add("custom", ["endDate"], f"The date range must not exceed {USAGE_MAX_DAYS} days")
    if issues.items:
        first = issues.items[0]
        raise EngineError(400, f"Invalid query: {first['path'][0]}: {first['message']}", issues.items)
    assert start is not None and end is not None
    return start, end


def usage_of(sessions: Iterable[EngineSession], start: float, end: float) -> dict[str, Any]:
    """Runway's usage object for the sessions created in ``[start, end)``, per UTC day."""
    days: dict[str, list[int]] = {}
    day = datetime.fromtimestamp(start, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.timestamp() < end:
        days[day.strftime("%Y-%m-%d")] = [0, 0]
        day += timedelta(days=1)
    total = seconds = measured = 0
    for s in sessions:
        if not start <= s.created_at < end:
            continue
        total += 1
        bucket = days.setdefault(datetime.fromtimestamp(s.created_at, UTC).strftime("%Y-%m-%d"), [0, 0])
        bucket[0] += 1
        duration = _duration(s)
        if duration is not None:
            measured += 1
            seconds += duration
            bucket[1] += duration
    return {
        "totalSeconds": seconds,
        "totalSessions": total,
        "avgDurationSeconds": round(seconds / measured) if measured else 0,
        "byDay": [{"date": d, "sessions": n, "seconds": sec} for d, (n, sec) in sorted(days.items())],
    }


# -- the wire shapes ----------------------------------------------------------------------------


def preset_name(preset_id: str) -> str:
    """``cooking-teacher`` → ``Cooking Teacher`` (the engine's presets have no other display name)."""
    return " ".join(part.capitalize() for part in preset_id.split("-"))


def _avatar_name(s: EngineSession) -> str:
    if s.avatar.get("type") == "runway-preset":
        return preset_name(str(s.avatar.get("presetId", "")))
    record = s.avatar_record or {}
    return str(record.get("name") or "Custom avatar")


def _list_avatar(s: EngineSession) -> dict[str, Any]:
    if s.avatar.get("type") == "runway-preset":
        preset = str(s.avatar.get("presetId", ""))
        return {"type": "runway-preset", "presetId": preset, "name": preset_name(preset)}
    record = s.avatar_record or {}
    return {"type": "custom", "id": s.avatar.get("avatarId"), "name": record.get("name")}


def _detail_avatar(s: EngineSession) -> dict[str, Any]:
    if s.avatar.get("type") == "runway-preset":
        return {"type": "runway-preset", "presetId": str(s.avatar.get("presetId", ""))}
    record = s.avatar_record or {}
    image = record.get("processedImageUri")
    return {
        "type": "custom",
        "id": s.avatar.get("avatarId"),
        "name": record.get("name"),
        # the engine keeps processed images as data URIs; only a real URL is one to hand out
        "imageUrl": image if isinstance(image, str) and image.startswith("https://") else None,
    }


def _name(s: EngineSession) -> str:
    stamp = datetime.fromtimestamp(s.created_at, UTC).strftime("%Y-%m-%d %H:%M")
    return f"{_avatar_name(s)} · {stamp} UTC"


def _duration(s: EngineSession) -> int | None:
    if s.status is RealtimeStatus.COMPLETED and s.duration is not None:
        return s.duration
    if s.started_at is None:
        return None
    until = s.ended_at if s.ended_at is not None else time.time()
    return max(0, min(round(until - s.started_at), s.max_duration))


def list_item(s: EngineSession) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": _name(s),
        "status": _STATUS[s.status],
        "avatar": _list_avatar(s),
        "createdAt": iso_ms(s.created_at),
        "duration": _duration(s),
        "hasTools": bool(s.tools),
    }


def detail(s: EngineSession) -> dict[str, Any]:
    status = _STATUS[s.status]
    body: dict[str, Any] = {
        "id": s.id,
        "name": _name(s),
        "avatar": _detail_avatar(s),
        "createdAt": iso_ms(s.created_at),
        "maxDuration": s.max_duration,
        "transcript": [dict(turn) for turn in s.transcript[:TRANSCRIPT_MAX]],
        "recordingUrl": None,
        "tools": [
            {"type": t.get("type"), "name": t.get("name"), "description": t.get("description")}
            for t in s.tools
        ],
        "status": status,
        "startedAt": iso_ms(s.started_at) if s.started_at is not None else None,
        "duration": _duration(s),
    }
    if status != "in_progress":
        body["endedAt"] = iso_ms(s.ended_at) if s.ended_at is not None else None
    if status == "failed":
        body["failure"] = s.failure or "Session failed"
        body["failureCode"] = s.failure_code or "internal_error"
    return body
