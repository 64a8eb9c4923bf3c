"""Path ids and list-page query parameters of the admin routes (avatars, documents, sites)."""

from __future__ import annotations

from aiohttp import web

from ..errors import NotFound, ValidationFailed
from ..models.common import is_page_cursor
from ..runway import is_uuid4
from . import bodies


def path_id(request: web.Request, name: str, kind: str) -> str:
    """A path id, lower-cased; 404 for anything that is not a UUID v4 (no upstream call for it)."""
    value = request.match_info[name]
    if not is_uuid4(value):
        raise NotFound(f"no {kind} {value[:64]}", code=f"{kind}_not_found")
    return value.lower()


def page_params(request: web.Request) -> tuple[int, str | None]:
    """``limit`` (1–100, default 50) and ``cursor`` (the ``nextCursor`` of the previous page, checked)."""
    limit = bodies.query_int(request, "limit", 50, 1, 100)
    cursor = request.query.get("cursor") or None
    if cursor is not None and not is_page_cursor(cursor):
        raise ValidationFailed("cursor is not valid", field="cursor")
    return limit, cursor
