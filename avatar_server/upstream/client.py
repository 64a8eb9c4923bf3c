"""HTTP client for Runway's Characters API (or the local engine speaking the same API).

The only module that talks httpx. Every call carries ``Authorization: Bearer
<secret>`` (consume: the session key instead), ``X-Runway-Version`` and an
``X-Request-Id`` correlation id that stays the same across retries of one call.

Retries (policy in ``retry.py``): idempotent calls (GET, DELETE) are retried
on 408/429/502/503/504, connection errors and timeouts, with full-jitter
exponential backoff, honouring ``Retry-After``, bounded by attempts and total
time. 400/401/403/404/409/422 are never retried.

Non-idempotent calls — ``POST /v1/realtime_sessions`` (create) and
``POST /v1/realtime_sessions/{id}/consume`` — are different. Runway has no
idempotency key, and a create that happened twice is a second *billed*
session; a consume is one-time. So such a call is sent again only when we know
the upstream did not act on it:

* it answered a refusal status (408, 429, 503): the request was turned away;
* the connection was never established (``ConnectError``, ``ConnectTimeout``)
  or no pooled connection was obtained (``PoolTimeout``): nothing was sent.

Everything else after the request may have left the machine is *ambiguous*:
a read/write timeout, a connection dropped mid-request
(``RemoteProtocolError``, ``ReadError``...), a 500/502/504 (a gateway may have
forwarded the request before failing), a 200 whose body we cannot read, or
cancellation of the awaiting task. Those raise :class:`UpstreamAmbiguous`
without retry and log one WARNING on ``avatar_server.upstream`` with what a
reconciler needs: operation, request id, method and path, UTC time, and the
body's ``avatar`` and ``maxDuration`` — never the secret or a key.

Error mapping: 400/422 → ``UpstreamStatusError(code="upstream_rejected")``,
401/403 → ``upstream_auth`` (consume: ``upstream_consume_refused``, the
session key was refused, not our secret), 404 → ``NotFound`` (create:
``upstream_rejected``; cancel: returns False), 409 → ``upstream_conflict``,
429 exhausted → ``LimitExceeded(code="upstream_rate_limited")``, 408 or timeouts
exhausted → ``UpstreamTimeout``, 5xx or connection errors exhausted →
``UpstreamUnavailable``. Messages include the upstream's ``error`` text,
truncated; never headers.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from avatar_server.errors import (
    AvatarServerError,
    LimitExceeded,
    NotFound,
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from avatar_server.upstream.retry import (
    CANCEL_RETRYABLE_STATUSES,
    CREATE_RETRYABLE_STATUSES,
    RETRYABLE_STATUSES,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
)
from avatar_server.upstream.wire import ConsumeResult, CreatedSession, UpstreamSession

logger = logging.getLogger("avatar_server.upstream")

SESSIONS_PATH = "/v1/realtime_sessions"
AVATARS_PATH = "/v1/avatars"
DOCUMENTS_PATH = "/v1/documents"
CONVERSATIONS_PATH = "/v1/avatar_conversations"
USAGE_PATH = "/v1/avatar_usage"
VOICES_PATH = "/v1/voices"
PING_PATH = f"{SESSIONS_PATH}/00000000-0000-4000-8000-000000000000"
PING_TIMEOUT = 2.0
_MESSAGE_LIMIT = 300
_USER_AGENT = "avatar-server/0.1"

# Errors raised before any byte of the request could reach the upstream.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class UpstreamClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_secret: str,
        version: str = "2024-11-06",
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        gate: Callable[[str], Awaitable[None]] | None = None,
        max_connections: int = 100,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        if not api_secret:
            raise ValueError("api_secret is required")
        self._secret = api_secret
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.stats: dict[str, int] = {"total": 0}
        # every attempt waits for a token of the request budget (``upstream.budget``), if any
        self._gate = gate
        # hears every attempt: (op, HTTP status or "timeout"/"error"/"cancelled", seconds) — metrics
        self.observe = observe
        self.in_flight = 0
        self.max_connections = max_connections
        self._closed = False
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            headers={"X-Runway-Version": version, "User-Agent": _USER_AGENT},
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never the secret
        return f"UpstreamClient(base_url={str(self._http.base_url)!r}, closed={self._closed})"

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._http.aclose()

    # -- realtime sessions -------------------------------------------------

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
            raise self._ambiguous(
                "create",
                "POST",
                SESSIONS_PATH,
                request_id,
                body,
                f"unreadable 200 body ({type(exc).__name__})",
            ) from exc

    async def get_session(self, upstream_id: str, *, op: str = "get", prepaid: bool = False) -> UpstreamSession:
        """``op`` names the read for the budget: ``get`` (provisioning polls) or ``check`` (a
        running session's safety check). ``prepaid``: the caller already holds a budget token for
        the first attempt (the poll scheduler buys them in bulk)."""
        resp, _ = await self._send("GET", _session_path(upstream_id), op=op, prepaid=prepaid)
        try:
            return UpstreamSession.model_validate(resp.json())
        except ValueError as exc:
            raise _malformed("get", exc) from exc

    async def cancel_session(self, upstream_id: str) -> bool:
        """DELETE the session: True if cancelled, False if the upstream says 404 (already gone).

        A cancel is idempotent, so it is retried on a 500 as well (``CANCEL_RETRYABLE_STATUSES``)."""
        try:
            await self._send("DELETE", _session_path(upstream_id), op="cancel",
                             retry_statuses=CANCEL_RETRYABLE_STATUSES)
        except NotFound:
            return False
        return True

    async def consume(self, upstream_id: str, session_key: str) -> ConsumeResult:
        """One-time exchange of the READY session key for LiveKit credentials."""
        path = f"{_session_path(upstream_id)}/consume"
        resp, _ = await self._send(
            "POST",
            path,
            op="consume",
            bearer=session_key,
            retry_statuses=CREATE_RETRYABLE_STATUSES,
            non_idempotent=True,
            reconcile={"upstreamId": upstream_id},
        )
        try:
            return ConsumeResult.model_validate(resp.json())
        except ValueError as exc:
            raise _malformed("consume", exc) from exc

    async def connect_backend(self, upstream_id: str) -> dict[str, Any]:
        """``POST /v1/realtime_sessions/{id}/connect_backend`` (API secret, no body): credentials for a
        backend to join the session and answer its ``backend_rpc`` tool calls — Runway's LiveKit
        ``{url, token, roomName, …}``, or the local engine's ``{url, token, roomName, transport:
        "avatar-engine"}`` (docs/tools.md). Not in Runway's OpenAPI subset: known from its Node handler."""
        return await self._object("POST", f"{_session_path(upstream_id)}/connect_backend", "connect_backend")

    # -- avatars and documents (Runway's field names, passed through) ------

    async def create_avatar(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/avatars`` → the avatar object. Never retried after an ambiguous failure."""
        return await self._create(AVATARS_PATH, body, "create_avatar")

    async def get_avatar(self, avatar_id: str) -> dict[str, Any]:
        return await self._object("GET", _item_path(AVATARS_PATH, avatar_id), "get_avatar")

    async def list_avatars(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._page(AVATARS_PATH, "list_avatars", limit, cursor)

    async def update_avatar(self, avatar_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /v1/avatars/{id}`` (retried like GET: the same PATCH twice has the same result)."""
        return await self._object("PATCH", _item_path(AVATARS_PATH, avatar_id), "update_avatar", json=body)

    async def delete_avatar(self, avatar_id: str) -> bool:
        """True if deleted, False if the upstream says 404 (already gone)."""
        return await self._delete(_item_path(AVATARS_PATH, avatar_id), "delete_avatar")

    async def create_document(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/documents`` → the document object. Never retried after an ambiguous failure."""
        return await self._create(DOCUMENTS_PATH, body, "create_document")

    async def get_document(self, document_id: str) -> dict[str, Any]:
        return await self._object("GET", _item_path(DOCUMENTS_PATH, document_id), "get_document")

    async def list_documents(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._page(DOCUMENTS_PATH, "list_documents", limit, cursor)

    async def update_document(self, document_id: str, body: dict[str, Any]) -> None:
        """``PATCH /v1/documents/{id}`` (name and/or content); Runway answers 204."""
        await self._send("PATCH", _item_path(DOCUMENTS_PATH, document_id), op="update_document", json=body)

    async def delete_document(self, document_id: str) -> bool:
        """True if deleted (and detached from every avatar), False if the upstream says 404."""
        return await self._delete(_item_path(DOCUMENTS_PATH, document_id), "delete_document")

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
        params: dict[str, Any] = {"limit": limit, "startDate": _iso_z(start_date)}
        if end_date is not None:
            params["endDate"] = _iso_z(end_date)
        if cursor:
            params["cursor"] = cursor
        resp, _ = await self._send("GET", CONVERSATIONS_PATH, op="list_conversations", params=params)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _malformed("list_conversations", exc) from exc
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise _malformed("list_conversations", TypeError("not a page"))
        return data

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """``GET /v1/avatar_conversations/{id}`` (the realtime session's id): the conversation,
        status-discriminated (``in_progress``, ``ended``, ``failed``), with its transcript."""
        return await self._object("GET", _item_path(CONVERSATIONS_PATH, conversation_id), "get_conversation")

    async def delete_conversation(self, conversation_id: str) -> bool:
        """``DELETE /v1/avatar_conversations/{id}``: True if deleted, False if the upstream says 404."""
        return await self._delete(_item_path(CONVERSATIONS_PATH, conversation_id), "delete_conversation")

    async def get_usage(self, start_date: datetime | float, end_date: datetime | float) -> dict[str, Any]:
        """``GET /v1/avatar_usage``: ``{totalSeconds, totalSessions, avgDurationSeconds, byDay}`` for
        ``[start_date, end_date)`` (at most 90 days; per UTC day)."""
        params = {"startDate": _iso_z(start_date), "endDate": _iso_z(end_date)}
        resp, _ = await self._send("GET", USAGE_PATH, op="get_usage", params=params)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _malformed("get_usage", exc) from exc
        if not isinstance(data, dict) or not isinstance(data.get("byDay"), list):
            raise _malformed("get_usage", TypeError("not a usage object"))
        return data

    # -- custom voices (Runway's fields, passed through) ---------------------

    async def create_voice(self, body: dict[str, Any]) -> str:
        """``POST /v1/voices`` → the new voice's id (PROCESSING). Never retried after an ambiguous failure."""
        return str((await self._create(VOICES_PATH, body, "voice_create"))["id"])

    async def get_voice(self, voice_id: str) -> dict[str, Any]:
        return await self._object("GET", _item_path(VOICES_PATH, voice_id), "voice_get")

    async def list_voices(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._page(VOICES_PATH, "voice_list", limit, cursor)

    async def update_voice(self, voice_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /v1/voices/{id}`` (the name) → the voice."""
        return await self._object("PATCH", _item_path(VOICES_PATH, voice_id), "voice_update", json=body)

    async def delete_voice(self, voice_id: str) -> bool:
        """True if deleted, False if the upstream says 404."""
        return await self._delete(_item_path(VOICES_PATH, voice_id), "voice_delete")

    async def preview_voice(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/voices/preview`` → ``{url, durationSecs}`` (nothing is created: retried like a GET)."""
        return await self._object("POST", f"{VOICES_PATH}/preview", "voice_preview", json=body)

    async def _create(self, path: str, body: dict[str, Any], op: str) -> dict[str, Any]:
        resp, request_id = await self._send(
            "POST", path, op=op, json=body, retry_statuses=CREATE_RETRYABLE_STATUSES, non_idempotent=True
        )
        try:
            data = resp.json()
        except ValueError as exc:
            raise self._ambiguous(op, "POST", path, request_id, body, "unreadable 200 body") from exc
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise self._ambiguous(op, "POST", path, request_id, body, "200 body without an id")
        return data

    async def _object(self, method: str, path: str, op: str, json: Any = None) -> dict[str, Any]:
        resp, _ = await self._send(method, path, op=op, json=json)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _malformed(op, exc) from exc
        if not isinstance(data, dict):
            raise _malformed(op, TypeError("not an object"))
        return data

    async def _page(self, path: str, op: str, limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        resp, _ = await self._send("GET", path, op=op, params=params)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _malformed(op, exc) from exc
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise _malformed(op, TypeError("not a page"))
        return data

    async def _delete(self, path: str, op: str) -> bool:
        try:
            await self._send("DELETE", path, op=op)
        except NotFound:
            return False
        return True

    # -- generic -----------------------------------------------------------

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        op: str = "other",
        retry_statuses: frozenset[int] | None = None,
        ambiguous_on_transport_error: bool = False,
    ) -> Any:
        """Any upstream call; parsed JSON, or None for 204 / an empty body.

        ``ambiguous_on_transport_error=True`` marks the call non-idempotent (see
        the module docstring); pair it with ``retry_statuses=CREATE_RETRYABLE_STATUSES``.
        """
        resp, _ = await self._send(
            method.upper(),
            path,
            op=op,
            json=json,
            params=params,
            retry_statuses=RETRYABLE_STATUSES if retry_statuses is None else frozenset(retry_statuses),
            non_idempotent=ambiguous_on_transport_error,
        )
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise _malformed(op, exc) from exc

    async def ping(self) -> bool:
        """True if the upstream answers any non-5xx status within ~2 s. No retries."""
        self._ensure_open()
        self._count("ping")
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                resp = await self._http.get(
                    PING_PATH,
                    headers=self._headers(self._secret, uuid.uuid4().hex),
                    timeout=httpx.Timeout(PING_TIMEOUT),
                )
        except (httpx.HTTPError, TimeoutError):
            return False
        return resp.status_code < 500

    # -- internals ---------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("UpstreamClient is closed")

    def _count(self, op: str) -> None:
        self.stats[op] = self.stats.get(op, 0) + 1
        self.stats["total"] += 1

    def _headers(self, bearer: str, request_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {bearer}", "X-Request-Id": request_id}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        op: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        bearer: str | None = None,
        retry_statuses: frozenset[int] = RETRYABLE_STATUSES,
        non_idempotent: bool = False,
        reconcile: dict[str, Any] | None = None,
        prepaid: bool = False,
    ) -> tuple[httpx.Response, str]:
        """Send with retries; return the 2xx response and the request id, or raise a mapped error."""
        self._ensure_open()
        request_id = uuid.uuid4().hex
        headers = self._headers(bearer if bearer is not None else self._secret, request_id)
        budget = RetryBudget(self.retry, self._rng)
        context = reconcile if reconcile is not None else json

        while True:
            self._ensure_open()
            if self._gate is not None and not (prepaid and budget.attempts == 0):
                await self._gate(op)
            budget.attempts += 1
            self._count(op)
            status: int | None = None
            retry_after: float | None = None
            failure: str
            timed_out = False
            self.in_flight += 1
            try:
                resp = await self._attempt(op, method, path, json=json, params=params, headers=headers)
            except _NOT_SENT_ERRORS as exc:
                failure = _describe(exc)
                timed_out = isinstance(exc, httpx.TimeoutException)
            except httpx.TransportError as exc:  # may have been sent: timeouts, dropped connections
                failure = _describe(exc)
                if non_idempotent:
                    raise self._ambiguous(op, method, path, request_id, context, failure) from exc
                timed_out = isinstance(exc, httpx.TimeoutException)
            except httpx.HTTPError as exc:  # decoding errors and the like: not worth retrying
                if non_idempotent:
                    raise self._ambiguous(op, method, path, request_id, context, _describe(exc)) from exc
                raise UpstreamError(f"upstream {op} failed: {_describe(exc)}", code="upstream_error") from exc
            except asyncio.CancelledError:
                if non_idempotent:
                    self._ambiguous(op, method, path, request_id, context, "cancelled while in flight")
                raise
            else:
                if resp.is_success:
                    return resp, request_id
                status = resp.status_code
                message = _upstream_message(resp)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if status not in retry_statuses:
                    if non_idempotent and status >= 500:
                        raise self._ambiguous(
                            op, method, path, request_id, context, f"HTTP {status} {message}"
                        )
                    raise _status_error(op, status, message, retry_after, budget.attempts)
                failure = f"HTTP {status} {message}".rstrip()
            finally:
                self.in_flight -= 1

            delay = budget.next_delay(retry_after)
            if delay is None:
                if status is not None:
                    raise _status_error(op, status, message, retry_after, budget.attempts)
                cls = UpstreamTimeout if timed_out else UpstreamUnavailable
                raise cls(f"upstream {op} failed after {budget.attempts} attempt(s): {failure}")
            logger.info(
                "upstream retry op=%s attempt=%d/%d status=%s delay=%.3fs request_id=%s reason=%s",
                op,
                budget.attempts,
                self.retry.max_attempts,
                status if status is not None else "-",
                delay,
                request_id,
                failure[:120],
            )
            await self._sleep(delay)
            budget.record_sleep(delay)

    async def _attempt(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """One HTTP attempt, told to ``observe`` (if any) with its outcome and duration."""
        if self.observe is None:
            return await self._http.request(method, path, **kw)
        started = time.monotonic()
        outcome = "error"
        try:
            resp = await self._http.request(method, path, **kw)
            outcome = str(resp.status_code)
            return resp
        except httpx.TimeoutException:
            outcome = "timeout"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            try:
                self.observe(op, outcome, time.monotonic() - started)
            except Exception:  # an observer never fails a request
                logger.debug("upstream observer failed", exc_info=True)

    def _ambiguous(
        self, op: str, method: str, path: str, request_id: str, context: Any, reason: str
    ) -> UpstreamAmbiguous:
        """Log the one reconciliation WARNING and build the error (caller raises it)."""
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fields = _reconcile_fields(context)
        logger.warning(
            "upstream %s ambiguous: may or may not have happened upstream; not retried "
            "op=%s method=%s path=%s request_id=%s at=%s %s reason=%s",
            op,
            op,
            method,
            path,
            request_id,
            at,
            " ".join(f"{k}={v}" for k, v in fields.items()),
            reason[:200],
            extra={"upstream_op": op, "request_id": request_id, "reconcile": fields},
        )
        return UpstreamAmbiguous(
            f"upstream {op} outcome unknown ({reason[:120]}); not retried, request id {request_id}",
            requestId=request_id,
        )


def _session_path(upstream_id: str) -> str:
    if not upstream_id:
        raise ValueError("upstream_id is required")
    return f"{SESSIONS_PATH}/{quote(upstream_id, safe='')}"


def _item_path(collection: str, item_id: str) -> str:
    if not item_id:
        raise ValueError("an id is required")
    return f"{collection}/{quote(item_id, safe='')}"


def _iso_z(when: datetime | float) -> str:
    """Runway's date-time form: UTC, milliseconds, ``Z``."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _truncate(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _upstream_message(resp: httpx.Response) -> str:
    """The upstream's ``{"error": ...}`` text (plus 400 ``issues``), truncated; never headers."""
    try:
        payload = resp.json()
    except ValueError:
        return _truncate(resp.text, 200) if resp.content else ""
    if not isinstance(payload, dict):
        return ""
    parts: list[str] = []
    error = payload.get("error")
    if isinstance(error, str):
        parts.append(error)
    elif isinstance(error, dict) and isinstance(error.get("message"), str):
        parts.append(error["message"])
    issues = payload.get("issues")
    if isinstance(issues, list):
        for issue in issues[:3]:
            if isinstance(issue, dict):
                where = ".".join(str(p) for p in issue.get("path") or [])
                parts.append(
                    f"{where}: {issue.get('message', '')}" if where else str(issue.get("message", ""))
                )
    return _truncate("; ".join(p for p in parts if p))


def _status_error(
    op: str, status: int, message: str, retry_after: float | None, attempts: int
) -> AvatarServerError:
    detail = f"upstream {op} answered {status}" + (f": {message}" if message else "")
    if attempts > 1:
        detail += f" (after {attempts} attempts)"
    if status == 429:
        return LimitExceeded(detail, code="upstream_rate_limited", retry_after=retry_after)
    if status == 408:
        return UpstreamTimeout(detail, upstreamStatus=status)
    if status >= 500:
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after is not None else None
        err = UpstreamUnavailable(detail, upstreamStatus=status, headers=headers)
        err.retry_after = retry_after  # type: ignore[attr-defined]
        return err
    if status == 404 and not op.startswith("create"):
        return NotFound(detail)
    if status in (401, 403):
        code = "upstream_consume_refused" if op == "consume" else "upstream_auth"
    elif status == 409:
        code = "upstream_conflict"
    elif 400 <= status < 500:
        code = "upstream_rejected"
    else:
        code = "upstream_unexpected"
    return UpstreamStatusError(detail, upstream_status=status, code=code)


def _malformed(op: str, exc: Exception) -> UpstreamError:
    return UpstreamError(
        f"upstream {op} answered an unreadable body ({type(exc).__name__})", code="upstream_malformed"
    )


def _reconcile_fields(context: Any) -> dict[str, str]:
    """What identifies a non-idempotent call for later reconciliation (no secrets, no prose)."""
    if not isinstance(context, dict):
        return {}
    fields: dict[str, str] = {}
    for key in ("upstreamId", "avatar", "maxDuration", "name"):
        if key in context:
            value = context[key]
            fields[key] = value if isinstance(value, str) else jsonlib.dumps(value, separators=(",", ":"))
    return fields
