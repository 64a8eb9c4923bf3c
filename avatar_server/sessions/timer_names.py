"""The one spelling of a session timer's name: ``<kind>:<session id>[:<arg>]``.

Timers are members of one Redis sorted set (``store.sessions``), scored by their due time;
``sessions.timers`` fires them. Every module that arms, removes or reads a timer builds or
parses its name here. No I/O here.
"""

from __future__ import annotations

from enum import StrEnum


class TimerKind(StrEnum):
    PROVISION = "provision"  # provision_timeout after create: end provision_timeout (queue_timeout)
    READY = "ready"  # ready_timeout after READY: end ready_timeout
    CAP = "cap"  # at endsAt: end cap
    WARN30 = "warn30"  # 30 s before endsAt: a warning to the client
    WARN10 = "warn10"  # 10 s before endsAt
    ABANDON = "abandon"  # the grace after the client's socket left: end abandoned
    CHECK = "check"  # every N s while RUNNING: read the upstream status
    CANCEL = "cancel"  # after a failed upstream cancel: retry it (arg: the upstream id)

    def of(self, session_id: str, arg: str | None = None) -> str:
        """The timer's member name for ``session_id`` (``arg``: the upstream id of a ``cancel``)."""
        return f"{self.value}:{session_id}" if arg is None else f"{self.value}:{session_id}:{arg}"


# (kind, seconds before endsAt) of the warnings a RUNNING session gets
WARNINGS: tuple[tuple[TimerKind, int], ...] = ((TimerKind.WARN30, 30), (TimerKind.WARN10, 10))

# the timers a session's end removes; a ``cancel`` retry outlives the end it follows
_ENDED_WITH_SESSION = tuple(k for k in TimerKind if k is not TimerKind.CANCEL)


def session_timers(session_id: str) -> list[str]:
    """The names of every timer that ends with the session (all kinds but ``cancel``)."""
    return [kind.of(session_id) for kind in _ENDED_WITH_SESSION]


def parse_timer(member: str) -> tuple[TimerKind | None, str, str]:
    """(kind — None for a kind this version does not know —, session id, arg or "") of a name."""
    kind, _, rest = member.partition(":")
    session_id, _, arg = rest.partition(":")
    try:
        return TimerKind(kind), session_id, arg
    except ValueError:
        return None, session_id, arg
