"""Session models: the lifecycle enum with its checked transitions, the stored record,
and the request bodies. No I/O here.

    PROVISIONING ──► READY ──► RUNNING ──► ENDED
         │             │                    ▲
         └─────────────┴────────────────────┘
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from avatar_server.models.common import NoControls, TextControls
from avatar_server.runway import UUID4_PATTERN, is_uuid4, iso_ms


class SessionStatus(StrEnum):
    PROVISIONING = "PROVISIONING"
    READY = "READY"
    RUNNING = "RUNNING"
    ENDED = "ENDED"


TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.PROVISIONING: frozenset({SessionStatus.READY, SessionStatus.ENDED}),
    SessionStatus.READY: frozenset({SessionStatus.RUNNING, SessionStatus.ENDED}),
    SessionStatus.RUNNING: frozenset({SessionStatus.ENDED}),
    SessionStatus.ENDED: frozenset(),
}


def sources_of(target: SessionStatus) -> frozenset[SessionStatus]:
    """The statuses from which ``target`` may be entered."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if target in nxt)


class EndReason(StrEnum):
    CAP = "cap"
    CLIENT = "client"
    ADMIN = "admin"
    UPSTREAM_COMPLETED = "upstream_completed"
    UPSTREAM_FAILED = "upstream_failed"
    UPSTREAM_CANCELLED = "upstream_cancelled"
    PROVISION_TIMEOUT = "provision_timeout"
    READY_TIMEOUT = "ready_timeout"
    ABANDONED = "abandoned"
    QUEUE_TIMEOUT = "queue_timeout"
    ERROR = "error"


END_MESSAGES: dict[EndReason, str] = {
    EndReason.CAP: "The session reached its time limit.",
    EndReason.CLIENT: "The session was ended.",
    EndReason.ADMIN: "The session was ended by an administrator.",
    EndReason.UPSTREAM_COMPLETED: "The avatar ended the session.",
    EndReason.UPSTREAM_FAILED: "The avatar service failed to run this session.",
    EndReason.UPSTREAM_CANCELLED: "The avatar service cancelled this session.",
    EndReason.PROVISION_TIMEOUT: "The avatar service did not get ready in time. Please try again.",
    EndReason.READY_TIMEOUT: "The session was ready but nobody joined it in time.",
    EndReason.ABANDONED: "The connection to the session was lost.",
    EndReason.QUEUE_TIMEOUT: "Too many people are talking to the avatar right now, and the wait ran out. Please try again later.",
    EndReason.ERROR: "The session could not be started because of an error.",
}


def iso(ts: float | None) -> str | None:
    """An optional epoch time as Runway writes times (``None`` stays ``None``)."""
    return None if ts is None else iso_ms(ts)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PresetAvatarRef(_Body):
    type: Literal["runway-preset"]
    presetId: Annotated[str, Field(min_length=1, max_length=64), NoControls]


class CustomAvatarRef(_Body):
    type: Literal["custom"]
    avatarId: Annotated[str, Field(pattern=UUID4_PATTERN)]


AvatarRef = Annotated[PresetAvatarRef | CustomAvatarRef, Field(discriminator="type")]


class ToolParameter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
    description: Annotated[str, Field(min_length=1, max_length=1024), TextControls]
    type: Literal["string", "integer", "number", "boolean"]
    required: Annotated[bool, Field(strict=True)] = True
    enum: Annotated[list[Annotated[str, Field(max_length=64), NoControls]], Field(max_length=20)] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["client_event", "backend_rpc"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
    description: Annotated[str, Field(min_length=1, max_length=1024), TextControls]
    parameters: Annotated[list[ToolParameter], Field(max_length=20)] = []


class SessionOptions(_Body):
    # strict: a JSON integer only (not "20", not true, not 20.0)
    maxDuration: Annotated[int, Field(ge=10, le=300, strict=True)] | None = None
    personality: Annotated[str, Field(min_length=1, max_length=10_000), TextControls] | None = None
    startScript: Annotated[str, Field(min_length=1, max_length=2_000), TextControls] | None = None
    tools: Annotated[list[Tool], Field(max_length=20)] | None = None


class SessionCreate(SessionOptions):
    """Body of ``POST /v1/sessions``."""

    avatar: AvatarRef


class SessionConnect(SessionOptions):
    """Body of ``POST /v1/sessions/connect``: ``avatarId`` is a preset id or a custom avatar id."""

    avatarId: Annotated[str, Field(min_length=1, max_length=64), NoControls]

    @field_validator("avatarId")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    def to_create(self) -> SessionCreate:
        ref: dict[str, Any]
        if is_uuid4(self.avatarId):
            ref = {"type": "custom", "avatarId": self.avatarId}
        else:
            ref = {"type": "runway-preset", "presetId": self.avatarId}
        data = self.model_dump(exclude={"avatarId"}, exclude_none=True)
        return SessionCreate.model_validate({"avatar": ref, **data})


class SessionRecord(BaseModel):
    """What the store keeps for a session. Timestamps are epoch seconds (floats)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: SessionStatus
    queued: bool = False
    avatar: dict[str, Any]
    maxDuration: int
    personality: str | None = None
    startScript: str | None = None
    tools: list[dict[str, Any]] | None = None
    createdAt: float
    readyAt: float | None = None
    startedAt: float | None = None
    endsAt: float | None = None
    endedAt: float | None = None
    endReason: EndReason | None = None
    endDetail: str | None = None
    upstreamId: str | None = None
    upstreamStatus: str | None = None
    upstreamDuration: int | None = None
    siteId: str | None = None
    origin: str | None = None
    # waiting in the server's waiting room (not yet created upstream); ``queued`` is true meanwhile
    inRoom: bool = False
    # when the upstream create was sent (a create in flight on an instance that died is unresolved)
    createSentAt: float | None = None


class Credentials(BaseModel):
    """Consumed upstream credentials, held server-side until handed to the client."""

    serverUrl: str
    token: str = Field(repr=False)
    roomName: str
    transport: Literal["livekit", "webrtc"]

    @classmethod
    def from_consume(cls, url: str, token: str, room_name: str) -> Credentials:
        transport: Literal["livekit", "webrtc"] = "livekit" if url.startswith(("ws://", "wss://")) else "webrtc"
        return cls(serverUrl=url, token=token, roomName=room_name, transport=transport)
