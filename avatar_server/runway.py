"""Runway's published vocabulary, in one place: ids, timestamps and the two status lifecycles.

Both sides of Runway's API use these: ``upstream/`` (our client of Runway, or of the local
engine) and ``engine/`` (the local engine, which answers as Runway does). Nothing here knows
HTTP, Redis or our own session lifecycle (that is ``models.sessions.SessionStatus``); it only
imports the standard library, so every package may depend on it.

Source: ``shared/upstream/runway-characters-openapi.json`` (version 2024-11-06).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum

UUID4_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
"""Runway's id pattern (UUID version 4), as a JSON-Schema / ``re`` pattern."""

UUID4 = re.compile(UUID4_PATTERN)


def is_uuid4(value: object) -> bool:
    return isinstance(value, str) and UUID4.match(value) is not None


def iso_ms(when: datetime | float | int) -> str:
    """A time as Runway writes it: ISO-8601 in UTC, milliseconds, ``Z`` (``2026-11-30T23:10:13.123Z``).

    Accepts an aware or naive (taken as UTC) ``datetime`` or epoch seconds."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms_now() -> str:
    return iso_ms(datetime.now(UTC))


class RealtimeStatus(StrEnum):
    """A realtime session's ``status`` (``GET /v1/realtime_sessions/{id}``)."""

    NOT_READY = "NOT_READY"
    READY = "READY"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in REALTIME_TERMINAL

    def can_become(self, new: RealtimeStatus) -> bool:
        return new in REALTIME_TRANSITIONS[self]


REALTIME_TERMINAL = frozenset({RealtimeStatus.COMPLETED, RealtimeStatus.FAILED, RealtimeStatus.CANCELLED})

REALTIME_TRANSITIONS: dict[RealtimeStatus, frozenset[RealtimeStatus]] = {
    RealtimeStatus.NOT_READY: frozenset({RealtimeStatus.READY, RealtimeStatus.FAILED, RealtimeStatus.CANCELLED}),
    RealtimeStatus.READY: frozenset({RealtimeStatus.RUNNING, RealtimeStatus.FAILED, RealtimeStatus.CANCELLED}),
    RealtimeStatus.RUNNING: frozenset({RealtimeStatus.COMPLETED, RealtimeStatus.CANCELLED}),
    RealtimeStatus.COMPLETED: frozenset(),
    RealtimeStatus.FAILED: frozenset(),
    RealtimeStatus.CANCELLED: frozenset(),
}


class AvatarStatus(StrEnum):
    """An avatar's ``status`` (``GET /v1/avatars/{id}``)."""

    PROCESSING = "PROCESSING"
    READY = "READY"
    FAILED = "FAILED"

    def can_become(self, target: AvatarStatus) -> bool:
        return target in AVATAR_TRANSITIONS[self]


AVATAR_TRANSITIONS: dict[AvatarStatus, frozenset[AvatarStatus]] = {
    AvatarStatus.PROCESSING: frozenset({AvatarStatus.READY, AvatarStatus.FAILED}),
    # A new reference image sends a settled avatar back to processing.
    AvatarStatus.READY: frozenset({AvatarStatus.PROCESSING}),
    AvatarStatus.FAILED: frozenset({AvatarStatus.PROCESSING}),
}
