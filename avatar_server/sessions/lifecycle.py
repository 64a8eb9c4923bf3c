"""What every part of the session lifecycle shares, with no I/O: its configuration, the
observer interface, the end reason an upstream end means, and the error a caller gets for
a session that has ended. ``sessions.service`` and its collaborators (``provisioner``,
``reconcile``, ``timers``) import it; it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import AvatarServerError, Conflict, UpstreamError, UpstreamTimeout
from ..models.sessions import END_MESSAGES, EndReason, SessionRecord
from ..runway import RealtimeStatus

CAP_SLACK = 2.0  # seconds: an upstream COMPLETED this close to endsAt is the cap

UPSTREAM_END_REASONS: dict[RealtimeStatus, EndReason] = {
    RealtimeStatus.COMPLETED: EndReason.UPSTREAM_COMPLETED,
    RealtimeStatus.FAILED: EndReason.UPSTREAM_FAILED,
    RealtimeStatus.CANCELLED: EndReason.UPSTREAM_CANCELLED,
}


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig:
    cap_seconds: int
    provision_timeout: float
    ready_timeout: float
    abandon_grace: float
    upstream_check_interval: float
    lease_seconds: float = 15.0


class SessionObserver(Protocol):
    """Hears each session start (credentials handed over: RUNNING) and end (``SessionService.observe``)."""

    async def session_started(self, rec: SessionRecord) -> None: ...
    async def session_ended(self, rec: SessionRecord) -> None: ...


def upstream_end_reason(rec: SessionRecord, status: RealtimeStatus, now: float) -> EndReason:
    """Why ``rec`` ends when its upstream session reached the terminal ``status`` at ``now``."""
    if status is RealtimeStatus.COMPLETED and rec.endsAt is not None and now >= rec.endsAt - CAP_SLACK:
        # the upstream stopped at its own maxDuration, which is our cap (its clock may start at
        # consume, a moment before ours): this is the cap, reported as such
        return EndReason.CAP
    return UPSTREAM_END_REASONS[status]


def ended_error(rec: SessionRecord) -> AvatarServerError:
    """The error for a caller waiting on (or asking for the credentials of) an ENDED session."""
    reason = rec.endReason or EndReason.ERROR
    message = END_MESSAGES[reason]
    if reason is EndReason.PROVISION_TIMEOUT:
        return UpstreamTimeout(message, code="provision_timeout", sessionId=rec.id)
    if reason in (EndReason.UPSTREAM_FAILED, EndReason.ERROR):
        return UpstreamError(message, code=f"session_{reason.value}", sessionId=rec.id, detail=rec.endDetail)
    return Conflict(message, code="session_ended", sessionId=rec.id, reason=reason.value)
