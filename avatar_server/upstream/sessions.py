"""Realtime sessions, and what they leave behind: their conversations and the account's usage.

    POST   /v1/realtime_sessions                    create (never retried after an ambiguous failure)
    GET    /v1/realtime_sessions/{id}               status (provisioning polls, safety checks)
    DELETE /v1/realtime_sessions/{id}               cancel (idempotent: a 500 is retried too)
    POST   /v1/realtime_sessions/{id}/consume       the one-time LiveKit credentials (session key)
    POST   /v1/realtime_sessions/{id}/connect_backend  credentials for the tool backend
    GET    /v1/avatar_conversations[/{id}], DELETE  one conversation per session (the same id)
    GET    /v1/avatar_usage                         per UTC day
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from avatar_server.runway import iso_ms
from avatar_server.upstream.failures import ambiguous, malformed
from avatar_server.upstream.retry import CANCEL_RETRYABLE_STATUSES, CREATE_RETRYABLE_STATUSES
from avatar_server.upstream.transport import Transport, item_path
from avatar_server.upstream.wire import ConsumeResult, CreatedSession, UpstreamSession

SESSIONS_PATH = "/v1/realtime_sessions"
CONVERSATIONS_PATH = "/v1/avatar_conversations"
USAGE_PATH = "/v1/avatar_usage"
PING_PATH = f"{SESSIONS_PATH}/00000000-0000-4000-8000-000000000000"
PING_TIMEOUT = 2.0


def session_path(upstream_id: str) -> str:
    if not upstream_id:
        raise ValueError("upstream_id is required")
    return f"{SESSIONS_PATH}/{quote(upstream_id, safe='')}"


class RealtimeSessionCalls(Transport):
    """The realtime-session calls of ``UpstreamClient``."""

    async def create_session(self, body: dict[str, Any]) -> str:
        """``POST /v1/realtime_sessions`` → the upstream session id. Never retried ambiguously."""
        resp, request_id = await self._send(
            "POST",
            SESSIONS_PATH,
            op="create",
            json=body,
            retry_statuses=CREATE_RETRYABLE_STATUSES,
            non_idempotent=True,
        )
        try:
            return CreatedSession.model_validate(resp.json()).id
        except ValueError as exc:  # JSONDecodeError and ValidationError
            raise ambiguous(
                "create", "POST", SESSIONS_PATH, request_id, body, f"unreadable 200 body ({type(exc).__name__})"
            ) from exc

    async def get_session(self, upstream_id: str, *, op: str = "get",
                          prepaid_at: float | None = None) -> UpstreamSession:
        """``op`` names the read for the budget: ``get`` (provisioning polls) or ``check`` (a
        running session's safety check). ``prepaid_at``: the caller already holds a budget token for
        the first attempt, bought at this ``time.monotonic()`` (the poll scheduler buys them in bulk;
        one gone stale meanwhile is replaced)."""
        resp, _ = await self._send("GET", session_path(upstream_id), op=op, prepaid_at=prepaid_at)
        try:
            return UpstreamSession.model_validate(resp.json())
        except ValueError as exc:
            raise malformed("get", exc) from exc

    async def cancel_session(self, upstream_id: str) -> bool:
        """DELETE the session: True if cancelled, False if the upstream says 404 (already gone).

        A cancel is idempotent, so it is retried on a 500 as well (``CANCEL_RETRYABLE_STATUSES``)."""
        return await self._delete(session_path(upstream_id), "cancel", CANCEL_RETRYABLE_STATUSES)

    async def consume(self, upstream_id: str, session_key: str) -> ConsumeResult:
        """One-time exchange of the READY session key for LiveKit credentials."""
        resp, _ = await self._send(
            "POST",
            f"{session_path(upstream_id)}/consume",
            op="consume",
            bearer=session_key,
            retry_statuses=CREATE_RETRYABLE_STATUSES,
            non_idempotent=True,
            reconcile={"upstreamId": upstream_id},
        )
        try:
            return ConsumeResult.model_validate(resp.json())
        except ValueError as exc:
            raise malformed("consume", exc) from exc

    async def connect_backend(self, upstream_id: str) -> dict[str, Any]:
        """``POST /v1/realtime_sessions/{id}/connect_backend`` (API secret, no body): credentials for a
        backend to join the session and answer its ``backend_rpc`` tool calls — Runway's LiveKit
        ``{url, token, roomName, …}``, or the local engine's ``{url, token, roomName, transport:
        "avatar-engine"}`` (docs/tools.md). Not in Runway's OpenAPI subset: known from its Node handler."""
        return await self._object("POST", f"{session_path(upstream_id)}/connect_backend", "connect_backend")

    async def ping(self) -> bool:
        """True if the upstream answers any non-5xx status within ~2 s. No retries."""
        status = await self._probe(PING_PATH, PING_TIMEOUT)
        return status is not None and status < 500

    # -- conversations (one per realtime session; the same id) -------------

    async def list_conversations(
        self,
        start_date: datetime | float,
        end_date: datetime | float | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/avatar_conversations``: one page ``{data, hasMore, nextCursor}`` of the
        conversations created in ``[start_date, end_date)`` (datetimes or epoch seconds).
        A conversation's id is its realtime session's id. Retried like every GET."""
        params: dict[str, Any] = {"limit": limit, "startDate": iso_ms(start_date)}
        if end_date is not None:
            params["endDate"] = iso_ms(end_date)
        if cursor:
            params["cursor"] = cursor
        return await self._object("GET", CONVERSATIONS_PATH, "list_conversations", params=params, required="data")

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """``GET /v1/avatar_conversations/{id}`` (the realtime session's id): the conversation,
        status-discriminated (``in_progress``, ``ended``, ``failed``), with its transcript."""
        return await self._object("GET", item_path(CONVERSATIONS_PATH, conversation_id), "get_conversation")

    async def delete_conversation(self, conversation_id: str) -> bool:
        """``DELETE /v1/avatar_conversations/{id}``: True if deleted, False if the upstream says 404."""
        return await self._delete(item_path(CONVERSATIONS_PATH, conversation_id), "delete_conversation")

    async def get_usage(self, start_date: datetime | float, end_date: datetime | float) -> dict[str, Any]:
        """``GET /v1/avatar_usage``: ``{totalSeconds, totalSessions, avgDurationSeconds, byDay}`` for
        ``[start_date, end_date)`` (at most 90 days; per UTC day)."""
        params = {"startDate": iso_ms(start_date), "endDate": iso_ms(end_date)}
        return await self._object("GET", USAGE_PATH, "get_usage", params=params, required="byDay")
