"""Error translation: what an upstream answer or failure becomes in ``avatar_server.errors``.

400/422 → ``UpstreamStatusError(code="upstream_rejected")``, 401/403 → ``upstream_auth``
(consume: ``upstream_consume_refused``, the session key was refused, not our secret), 404 →
``NotFound`` (create: ``upstream_rejected``; cancel and deletes: the caller returns False),
409 → ``upstream_conflict``, 429 exhausted → ``LimitExceeded(code="upstream_rate_limited")``,
408 or timeouts exhausted → ``UpstreamTimeout``, 5xx or connection errors exhausted →
``UpstreamUnavailable``; a 2xx whose body cannot be read → ``upstream_malformed``. Messages
include the upstream's ``error`` text, truncated; never headers.

A non-idempotent call whose outcome is unknown becomes ``UpstreamAmbiguous``, with the one
reconciliation WARNING (``ambiguous``): operation, request id, method and path, UTC time, and
the body's ``avatar``, ``maxDuration`` or ``name`` — never the secret or a key.
"""

from __future__ import annotations

import json as jsonlib
import logging
from typing import Any

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
from avatar_server.runway import iso_ms_now

logger = logging.getLogger("avatar_server.upstream")

MESSAGE_LIMIT = 300


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def upstream_message(resp: httpx.Response) -> str:
    """The upstream's ``{"error": ...}`` text (plus 400 ``issues``), truncated; never headers."""
    try:
        payload = resp.json()
    except ValueError:
        return truncate(resp.text, 200) if resp.content else ""
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
    return truncate("; ".join(p for p in parts if p))


def status_error(
    op: str, status: int, message: str, retry_after: float | None, attempts: int
) -> AvatarServerError:
    """The error for a non-2xx answer that is not (or no longer) retried."""
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


def exhausted(op: str, attempts: int, failure: str, *, timed_out: bool) -> UpstreamError:
    """Retries used up on timeouts or connection errors."""
    cls = UpstreamTimeout if timed_out else UpstreamUnavailable
    return cls(f"upstream {op} failed after {attempts} attempt(s): {failure}")


def malformed(op: str, exc: Exception) -> UpstreamError:
    return UpstreamError(
        f"upstream {op} answered an unreadable body ({type(exc).__name__})", code="upstream_malformed"
    )


def ambiguous(op: str, method: str, path: str, request_id: str, context: Any, reason: str) -> UpstreamAmbiguous:
    """Log the one reconciliation WARNING and build the error (the caller raises it)."""
    fields = reconcile_fields(context)
    logger.warning(
        "upstream %s ambiguous: may or may not have happened upstream; not retried "
        "op=%s method=%s path=%s request_id=%s at=%s %s reason=%s",
        op,
        op,
        method,
        path,
        request_id,
        iso_ms_now(),
        " ".join(f"{k}={v}" for k, v in fields.items()),
        reason[:200],
        extra={"upstream_op": op, "request_id": request_id, "reconcile": fields},
    )
    return UpstreamAmbiguous(
        f"upstream {op} outcome unknown ({reason[:120]}); not retried, request id {request_id}",
        requestId=request_id,
    )


def reconcile_fields(context: Any) -> dict[str, str]:
    """What identifies a non-idempotent call for later reconciliation (no secrets, no prose)."""
    if not isinstance(context, dict):
        return {}
    fields: dict[str, str] = {}
    for key in ("upstreamId", "avatar", "maxDuration", "name"):
        if key in context:
            value = context[key]
            fields[key] = value if isinstance(value, str) else jsonlib.dumps(value, separators=(",", ":"))
    return fields
