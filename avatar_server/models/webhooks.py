"""Webhook models: a site's deliveries as admins see them, and the events' bodies (the OpenAPI
document's ``webhooks`` section). No I/O here."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from avatar_server.models.common import ResponseModel, Timestamp


class WebhookDelivery(ResponseModel):
    """One webhook delivery: an event for a site's backend, and how its attempts went."""

    id: str = Field(description="the webhook-id header of every attempt (msg_…)")
    siteId: str
    event: Literal["session.started", "session.ended", "conversation.ready"]
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="attempts made so far")
    createdAt: Timestamp
    lastAttemptAt: Timestamp | None = None
    nextAttemptAt: Timestamp | None = Field(None, description="when the next attempt is due (pending only)")
    deliveredAt: Timestamp | None = None
    lastStatus: int | None = Field(None, description="the receiver's last HTTP status (null: no answer)")
    lastError: str | None = None
    payload: dict[str, Any] = Field(description="the body sent, as JSON")

    @classmethod
    def of(cls, record: dict[str, Any]) -> WebhookDelivery:
        return cls.model_validate({**record, "payload": json.loads(record.get("body") or "{}")})


class WebhookDeliveryPage(ResponseModel):
    """The site's latest deliveries, newest first."""

    data: list[WebhookDelivery]


# --- event bodies ---------------------------------------------------------------------------------


class SessionStartedData(BaseModel):
    sessionId: str
    siteId: str
    avatar: dict[str, Any]
    origin: str | None = None
    maxDuration: int
    startedAt: str = Field(description="when the credentials went to the visitor (ISO 8601)")
    endsAt: str = Field(description="when the cap ends it at the latest")


class SessionEndedData(BaseModel):
    sessionId: str
    siteId: str
    avatar: dict[str, Any]
    origin: str | None = None
    startedAt: str
    endedAt: str
    endReason: str = Field(description="cap, client, admin, abandoned, upstream_completed, upstream_failed, "
                                       "upstream_cancelled, error …")
    durationSeconds: float = Field(description="endedAt − startedAt")


class ConversationReadyData(BaseModel):
    conversationId: str = Field(description="the conversation's id (its session's id): GET /v1/conversations/{id}")
    sessionId: str
    siteId: str
    status: str = Field(description="ended or failed (as the upstream says), or unavailable (no transcript)")
    endReason: str | None = None
    durationSeconds: int | None = None


class SessionStartedEvent(BaseModel):
    """`session.started`: a visitor's session started (its credentials were handed over)."""

    type: Literal["session.started"]
    timestamp: str
    data: SessionStartedData


class SessionEndedEvent(BaseModel):
    """`session.ended`: a session that had started ended (sent once per session.started)."""

    type: Literal["session.ended"]
    timestamp: str
    data: SessionEndedData


class ConversationReadyEvent(BaseModel):
    """`conversation.ready`: the session's conversation (transcript) is kept and can be read."""

    type: Literal["conversation.ready"]
    timestamp: str
    data: ConversationReadyData
