"""What ``/v1/conversations`` and ``/v1/usage`` answer, as pydantic models (the OpenAPI document).

The ``conversations`` package builds these bodies as plain dicts of exactly these keys;
``tests/api/test_conversations.py`` checks live answers against the generated schemas.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

ConversationStatus = Literal["pending", "ended", "failed", "unavailable"]


class TranscriptEntry(BaseModel):
    """One turn, as the upstream recorded it (Runway's TranscriptEntry)."""

    role: Literal["user", "assistant"]
    content: str | None
    timestamp: str | None
    toolCalls: list[dict[str, Any]] | None = None
    toolResults: list[dict[str, Any]] | None = None


class ConversationSummary(BaseModel):
    id: str = Field(description="the session's id")
    upstreamId: str | None = Field(description="the upstream's conversation (= realtime session) id")
    siteId: str | None = Field(description="the site whose visitor it was; null for an admin start")
    avatar: dict[str, Any] = Field(description="{type: runway-preset, presetId} or {type: custom, avatarId}")
    startedAt: str | None = Field(description="when the credentials went to the client (RUNNING)")
    endedAt: str | None
    durationSeconds: int = Field(description="our measure: endedAt − startedAt, whole seconds")
    upstreamDurationSeconds: int | None = Field(description="the upstream's own duration, once fetched")
    endReason: str | None
    status: ConversationStatus = Field(
        description="pending: the upstream's transcript is still being fetched; ended / failed: as the "
                    "upstream reported; unavailable: the upstream never gave it (kept without a transcript)")
    turns: int = Field(description="entries in the transcript")
    recordingUrl: str | None = Field(description="the upstream's recording, while it keeps one (24–48 h)")
    expiresAt: str | None = Field(description="when this conversation is erased (the retention)")


class Conversation(ConversationSummary):
    transcript: list[TranscriptEntry]


class ConversationPage(BaseModel):
    data: list[ConversationSummary]
    hasMore: bool
    nextCursor: str | None


class ConversationDeleted(BaseModel):
    id: str
    deleted: Literal[True]
    upstream: Literal["deleted", "not_found", "refused", "none"] = Field(
        description="deleted: the upstream erased its copy; not_found: it had none (any more); refused: "
                    "the upstream did not erase it (see upstreamMessage; ours is erased anyway); none: "
                    "there was no upstream conversation")
    upstreamMessage: str | None


class UsageDay(BaseModel):
    date: str = Field(description="UTC calendar date, YYYY-MM-DD")
    sessions: int
    seconds: int


class UsageSite(BaseModel):
    siteId: str | None = Field(description="null: sessions an admin started (no site)")
    sessions: int
    seconds: int
    byDay: list[UsageDay]


class UpstreamUsage(BaseModel):
    """Runway's ``/v1/avatar_usage`` for the same days (its own count: every session created)."""

    totalSeconds: int
    totalSessions: int
    avgDurationSeconds: int
    byDay: list[UsageDay]


class Usage(BaseModel):
    from_: str = Field(alias="from", description="first UTC day counted (YYYY-MM-DD)")
    to: str = Field(description="last UTC day counted (YYYY-MM-DD), inclusive")
    totalSessions: int = Field(description="sessions that reached RUNNING (conversations) in these days")
    totalSeconds: int
    avgDurationSeconds: int
    byDay: list[UsageDay]
    byEndReason: dict[str, int]
    bySite: list[UsageSite]
    upstream: UpstreamUsage | None = Field(
        description="the upstream's usage for the same days (whole account, unfiltered); null if it did not "
                    "answer")
    upstreamError: str | None = Field(description="why upstream is null")
