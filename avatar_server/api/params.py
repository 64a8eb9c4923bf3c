"""Path ids and list-page query parameters of the admin routes (avatars, documents, sites)."""

from __future__ import annotations

import re

from aiohttp import web

from ..errors import NotFound, ValidationFailed
from ..runway import UUID4_PATTERN
from ..store.lex_index import is_index_member
from . import bodies

_UUID = re.compile(UUID4_PATTERN)


def path_id(request: web.Request, name: str, kind: str) -> str:
    """A path id, lower-cased; 404 for anything that is not a UUID v4 (no upstream call for it)."""
    value = request.match_info[name]
    if not _UUID.match(value):
        raise NotFound(f"no {kind} {value[:64]}", code=f"{kind}_not_found")
    return value.lower()


def page_params(request: web.Request) -> tuple[int, str | None]:
    """``limit`` (1–100, default 50) and ``cursor`` (the ``nextCursor`` of the previous page, checked)."""
    limit = bodies.query_int(request, "limit", 50, 1, 100)
    cursor = request.query.get("cursor") or None
    if cursor is not None and not is_index_member(cursor):
        raise ValidationFailed("cursor is not valid", field="cursor")
    return limit, cursor
