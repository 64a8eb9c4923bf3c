"""Conversations and usage (admin): ``/v1/conversations``, ``/v1/conversations/{id}``, ``/v1/usage``.

    GET    /v1/conversations?siteId&avatarId&from&to&limit&cursor   newest first (by startedAt)
    GET    /v1/conversations/{id}                                  with its transcript
    DELETE /v1/conversations/{id}                                  ours and the upstream's
    GET    /v1/usage?from&to&siteId&avatarId                       per UTC day, site, end reason

``from``/``to``: an ISO-8601 date-time (``Z`` or an offset) or a UTC date ``YYYY-MM-DD`` (as ``to``,
the whole day). Conversations: ``from`` inclusive, ``to`` exclusive for a date-time. Usage: whole
UTC days, ``from`` through ``to``, at most 90 (default: the last 30 days).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from ..appkeys import CONVERSATIONS, USAGE
from ..conversations.usage import DEFAULT_DAYS, MAX_DAYS
from ..errors import NotFound, ValidationFailed
from ..runway import is_uuid4
from . import bodies
from .auth import require_admin
from .params import path_id

routes = web.RouteTableDef()

LIMIT_DEFAULT = 20
_CURSOR = re.compile(r"^(\d{1,16})\.([0-9a-f-]{36})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_AVATAR_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def _when(request: web.Request, name: str, *, end_of_day: bool = False) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > 40:
        raise ValidationFailed(f"{name} must be an ISO-8601 date-time or a date YYYY-MM-DD", field=name)
    try:
        if _DATE.match(raw):
            day = date.fromisoformat(raw)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return at + timedelta(days=1) if end_of_day else at
        at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{name} must be an ISO-8601 date-time or a date YYYY-MM-DD", field=name) from None
    if at.tzinfo is None:
        raise ValidationFailed(f"{name} must say its time zone (end it with Z)", field=name)
    return at.astimezone(UTC)


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    site_id = request.query.get("siteId") or None
    if site_id is not None and site_id != "admin" and not is_uuid4(site_id):
        raise ValidationFailed("siteId must be a site's id (or admin: sessions started with the admin token)",
                               field="siteId")
    avatar_id = (request.query.get("avatarId") or "").lower() or None
    if avatar_id is not None and not _AVATAR_ID.match(avatar_id):
        raise ValidationFailed("avatarId must be a preset's id or a custom avatar's id", field="avatarId")
    return (site_id.lower() if site_id and site_id != "admin" else site_id), avatar_id


def _summary(conv: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in conv.items() if k != "transcript"}
    out["turns"] = len(conv.get("transcript") or [])
    out.setdefault("expiresAt", None)
    return out


@routes.get("/v1/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    require_admin(request)
    site_id, avatar_id = _filters(request)
    limit = bodies.query_int(request, "limit", LIMIT_DEFAULT, 1, 100)
    start, end = _when(request, "from"), _when(request, "to", end_of_day=True)
    if start is not None and end is not None and end <= start:
        raise ValidationFailed("to must be after from", field="to")
    before = None
    cursor = request.query.get("cursor") or None
    if cursor is not None:
        match = _CURSOR.match(cursor)
        if match is None:
            raise ValidationFailed("cursor is not valid", field="cursor")
        before = (int(match.group(1)), match.group(2))
    items, more = await request.app[CONVERSATIONS].page(
        site_id=site_id, avatar_id=avatar_id, limit=limit, before=before, start=start, end=end)
    last = items[-1] if items and more else None
    next_cursor = None
    if last is not None:
        started = datetime.fromisoformat(last["startedAt"].replace("Z", "+00:00"))
        next_cursor = f"{round(started.timestamp() * 1000)}.{last['id']}"
    return web.json_response({"data": [_summary(c) for c in items], "hasMore": more, "nextCursor": next_cursor})


@routes.get("/v1/conversations/{id}")
async def get_conversation(request: web.Request) -> web.Response:
    require_admin(request)
    conv_id = path_id(request, "id", "conversation")
    conv = await request.app[CONVERSATIONS].get(conv_id)
    if conv is None:
        raise NotFound(f"no conversation {conv_id}", code="conversation_not_found")
    body = _summary(conv)
    body["transcript"] = conv.get("transcript") or []
    return web.json_response(body)


@routes.delete("/v1/conversations/{id}")
async def delete_conversation(request: web.Request) -> web.Response:
    require_admin(request)
    conv_id = path_id(request, "id", "conversation")
    outcome = await request.app[CONVERSATIONS].delete(conv_id)
    if outcome is None:
        raise NotFound(f"no conversation {conv_id}", code="conversation_not_found")
    return web.json_response(outcome)


@routes.get("/v1/usage")
async def usage(request: web.Request) -> web.Response:
    require_admin(request)
    site_id, avatar_id = _filters(request)
    start, end = _when(request, "from"), _when(request, "to")
    last = (end or datetime.now(UTC)).date()
    first = start.date() if start else last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise ValidationFailed("from must not be after to", field="from")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationFailed(f"the range may cover at most {MAX_DAYS} days", field="to", limit=MAX_DAYS)
    report = await request.app[USAGE].report(first, last, site_id="-" if site_id == "admin" else site_id,
                                            avatar_id=avatar_id)
    return web.json_response(report)
