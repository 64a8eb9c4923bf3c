"""Sorted sets used as ordered lists: every score 0, members ``<ms, 15 digits>:<id>``, so the lex
order is the age order. A page's cursor is the last member it showed; the next page starts just
after it, so every item present for the whole walk is seen exactly once, whatever is added or
deleted meanwhile. Used by the sites, knowledge and engine catalog stores."""

from __future__ import annotations

from ..models.common import is_page_cursor
from .connection import Redis


def index_member(ms: int, item_id: str) -> str:
    return f"{ms:015d}:{item_id}"


def is_index_member(value: str) -> bool:
    """Whether ``value`` could be a member (a cursor a client sends back is checked with this)."""
    return is_page_cursor(value)


async def page(
    redis: Redis, index: str, limit: int, after: str | None, *, descending: bool = False
) -> tuple[list[str], str | None]:
    """The ids of up to ``limit`` members after ``after`` (exclusive), and the next cursor (None: the
    last page)."""
    if descending:
        hi = f"({after}" if after else "+"
        members = await redis.zrevrangebylex(index, hi, "-", start=0, num=limit + 1)
    else:
        lo = f"({after}" if after else "-"
        members = await redis.zrangebylex(index, lo, "+", start=0, num=limit + 1)
    more = len(members) > limit
    members = members[:limit]
    return [m.split(":", 1)[1] for m in members], (members[-1] if more and members else None)
