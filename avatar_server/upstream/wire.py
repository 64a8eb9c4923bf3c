"""Runway's wire shapes for realtime sessions (version 2024-11-06).

Parsed leniently (``extra="ignore"``): the upstream may add fields. Secrets
(``sessionKey``, the LiveKit ``token``) are kept out of ``repr``/``str`` so a
logged model never leaks them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from avatar_server.runway import RealtimeStatus


class UpstreamSession(BaseModel):
    """``GET /v1/realtime_sessions/{id}``: one shape per ``status`` (flattened)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    status: RealtimeStatus
    createdAt: str | None = None
    queued: bool | None = None  # NOT_READY: waiting for capacity
    sessionKey: str | None = Field(default=None, repr=False)  # READY
    expiresAt: str | None = None  # READY
    duration: int | None = None  # COMPLETED (seconds)
    failure: str | None = None  # FAILED
    failureCode: str | None = None  # FAILED

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


class CreatedSession(BaseModel):
    """``POST /v1/realtime_sessions`` → 200 ``{id}``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1)


class ConsumeResult(BaseModel):
    """``POST /v1/realtime_sessions/{id}/consume`` → LiveKit credentials (one-time)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str
    token: str = Field(repr=False)
    roomName: str
