"""What the session routes answer, as pydantic models: the contract /openapi.json publishes.

The handlers in ``api.sessions`` answer these models (``model_dump(mode="json")``), so each
shape is written once; ``tests/api/test_fuzz_openapi.py`` checks the live responses against
the schemas generated from them. No I/O here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .sessions import END_MESSAGES, EndReason, SessionRecord, SessionStatus, iso


class SessionCreated(BaseModel):
    """``POST /v1/sessions`` → 201. Provisioning goes on in the background."""

    id: str
    status: SessionStatus
    clientToken: str = Field(description="ct_…: reads and ends this session and opens its signal socket")
    signalUrl: str = Field(description="ws(s)://…/v1/sessions/{id}/signal; add ?token=<clientToken>")
    maxDuration: int
    createdAt: str


class SessionConnected(BaseModel):
    """``POST /v1/sessions/connect`` → 200 once the credentials are ready (Runway's connectUrl shape)."""

    sessionId: str
    serverUrl: str
    token: str = Field(description="the one-time media credential, for this browser only")
    roomName: str
    transport: Literal["livekit", "webrtc"]
    clientToken: str
    signalUrl: str
    endsAt: str | None
    iceServers: list[dict[str, Any]] | None = Field(
        default=None, description="transport webrtc only: RTCIceServer objects for the browser's peer connection"
    )


class SessionView(BaseModel):
    """``GET /v1/sessions/{id}``: never a secret, session key or credential."""

    id: str
    status: SessionStatus
    queued: bool
    avatar: dict[str, Any]
    maxDuration: int
    createdAt: str | None
    readyAt: str | None
    startedAt: str | None
    endsAt: str | None
    endedAt: str | None
    endReason: EndReason | None
    endMessage: str | None
    upstreamId: str | None
    upstreamStatus: str | None
    upstreamDuration: int | None
    siteId: str | None
    position: int | None = Field(None, description="while it waits in the waiting room: 1 = next")
    etaSeconds: float | None = Field(None, description="while it waits: the expected wait, from measured service times")

    @classmethod
    def from_record(cls, rec: SessionRecord, waiting: tuple[int, float | None] | None = None) -> SessionView:
        """``rec`` as the API shows it: never a secret or credential. ``waiting``: (position,
        etaSeconds) while it waits in the waiting room."""
        position, eta = waiting if waiting is not None else (None, None)
        return cls(
            id=rec.id,
            status=rec.status,
            queued=rec.queued,
            avatar=rec.avatar,
            maxDuration=rec.maxDuration,
            createdAt=iso(rec.createdAt),
            readyAt=iso(rec.readyAt),
            startedAt=iso(rec.startedAt),
            endsAt=iso(rec.endsAt),
            endedAt=iso(rec.endedAt),
            endReason=rec.endReason,
            endMessage=END_MESSAGES[rec.endReason] if rec.endReason else None,
            upstreamId=rec.upstreamId,
            upstreamStatus=rec.upstreamStatus,
            upstreamDuration=rec.upstreamDuration,
            siteId=rec.siteId,
            position=position,
            etaSeconds=eta,
        )


class SessionPage(BaseModel):
    """``GET /v1/sessions``: newest first."""

    data: list[SessionView]
    hasMore: bool
    nextCursor: str | None


class ErrorDetail(BaseModel):
    code: str = Field(description="stable snake_case code, e.g. origin_not_allowed, concurrency_limit")
    message: str = Field(description="for a person")
    field: str | None = Field(None, description="the offending field (dotted camelCase path), on 400/422")
    limit: int | None = Field(None, description="the limit that was hit (413, 429, some 422)")
    active: int | None = Field(None, description="the site's sessions not yet ENDED (429 concurrency_limit)")

    model_config = {"extra": "allow"}


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", ...}}``."""

    error: ErrorDetail


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: bool
    upstream: bool


class WaitingLane(BaseModel):
    siteId: str | None = Field(description="the site; null for the admin lane")
    waiting: int


class BudgetView(BaseModel):
    maxRps: int
    usedLastSecond: int = Field(description="upstream requests in the last second, all instances")
    waitingHere: int = Field(description="requests of this instance waiting for a token now")


class WaitingRoomView(BaseModel):
    """``GET /v1/waiting-room``: the room, the upstream slots and the request budget now."""

    waiting: int
    size: int = Field(description="AVATAR_SERVER_WAITING_ROOM_SIZE")
    upstreamAlive: int = Field(description="upstream sessions held (created or being created, not terminal)")
    upstreamLimit: int | None = Field(description="the concurrency in force; null while none is known")
    limitLearned: bool = Field(description="the limit was learned from the upstream's queued answers")
    etaPerPlaceSeconds: float = Field(description="measured time between starts served from the room")
    lanes: list[WaitingLane]
    budget: BudgetView
    busy: str | None = Field(description="why this instance refuses starts now (server_busy), if it does")
