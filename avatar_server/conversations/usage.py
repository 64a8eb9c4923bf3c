"""Usage from our own ledger, with the upstream's ``/v1/avatar_usage`` for the same days beside it.

Our ledger counts conversations — sessions that reached RUNNING — on the UTC day they started,
with our measured seconds and their end reason, per site and avatar (``store.conversations``).
The upstream counts every realtime session created (those that never connected included) with
its own measured seconds, for the whole account: the two are shown side by side so that a
mismatch (a session billed that we never delivered, or a clock that differs) shows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..errors import AvatarServerError
from ..store.conversations import ConversationStore
from ..upstream import UpstreamClient

MAX_DAYS = 90
DEFAULT_DAYS = 30
UPSTREAM_TIMEOUT = 10.0


def days_between(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


class UsageService:
    def __init__(self, *, store: ConversationStore, upstream: UpstreamClient) -> None:
        self.store = store
        self.upstream = upstream

    async def report(self, first: date, last: date, *, site_id: str | None = None,
                     avatar_id: str | None = None) -> dict[str, Any]:
        days = days_between(first, last)
        ledgers, (upstream, upstream_error) = await asyncio.gather(
            self.store.usage_days(days), self._upstream(first, last))
        site = site_id or "*"
        avatar = avatar_id.lower() if avatar_id else "*"
        by_day = []
        reasons: dict[str, int] = {}
        sites: dict[str, dict[str, Any]] = {}
        for day, ledger in zip(days, ledgers, strict=True):
            by_day.append({"date": day, "sessions": ledger.get(f"{site}|{avatar}|sessions", 0),
                           "seconds": ledger.get(f"{site}|{avatar}|seconds", 0)})
            for name, count in ledger.items():
                s, a, metric = name.split("|", 2)
                if a != avatar:
                    continue
                if s == site and metric.startswith("reason:"):
                    reasons[metric[7:]] = reasons.get(metric[7:], 0) + count
                if s != "*" and (site_id is None or s == site_id) and metric in ("sessions", "seconds"):
                    entry = sites.setdefault(s, {"siteId": None if s == "-" else s, "sessions": 0, "seconds": 0,
                                                 "byDay": {d: {"date": d, "sessions": 0, "seconds": 0}
                                                           for d in days}})
                    entry[metric] += count
                    entry["byDay"][day][metric] += count
        total = sum(d["sessions"] for d in by_day)
        seconds = sum(d["seconds"] for d in by_day)
        by_site = sorted(sites.values(), key=lambda e: (-e["seconds"], -e["sessions"], e["siteId"] or ""))
        for entry in by_site:
            entry["byDay"] = list(entry["byDay"].values())
        return {
            "from": days[0],
            "to": days[-1],
            "totalSessions": total,
            "totalSeconds": seconds,
            "avgDurationSeconds": round(seconds / total) if total else 0,
            "byDay": by_day,
            "byEndReason": dict(sorted(reasons.items())),
            "bySite": by_site,
            "upstream": upstream,
            "upstreamError": upstream_error,
        }

    async def _upstream(self, first: date, last: date) -> tuple[dict[str, Any] | None, str | None]:
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        try:
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                raw = await self.upstream.get_usage(start, end)
        except AvatarServerError as exc:
            return None, exc.message
        except TimeoutError:
            return None, f"the upstream did not answer within {UPSTREAM_TIMEOUT:g} s"
        return _upstream_usage(raw)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _upstream_usage(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    days = []
    for entry in raw.get("byDay") or []:
        if isinstance(entry, dict) and isinstance(entry.get("date"), str):
            days.append({"date": entry["date"][:10], "sessions": _int(entry.get("sessions")),
                         "seconds": _int(entry.get("seconds"))})
    return {
        "totalSeconds": _int(raw.get("totalSeconds")),
        "totalSessions": _int(raw.get("totalSessions")),
        "avgDurationSeconds": _int(raw.get("avgDurationSeconds")),
        "byDay": days,
    }, None
