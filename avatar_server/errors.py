"""The one error hierarchy of avatar_server.

Every failure that reaches a caller is one of these; ``api.middlewares`` maps
them to HTTP in one place (status, ``{"error": {"code", "message", ...}}``,
headers such as ``Retry-After``). Nothing else turns exceptions into responses.

    AvatarServerError                 500 internal_error
    ├── BadRequest                    400 bad_request
    │   └── ValidationFailed          422 validation_error (field=...)
    ├── Unauthorized                  401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not_found
    ├── RequestTimeout                408 request_timeout
    ├── Conflict                      409 conflict
    ├── PayloadTooLarge               413 payload_too_large
    ├── LimitExceeded                 429 rate_limited (Retry-After)
    ├── StoreUnavailable              503 store_unavailable (Retry-After; Redis does not answer)
    ├── ServerBusy                    503 server_busy (Retry-After): refused before admission
    ├── ToolCallFailed                502 tool_failed: a backend_rpc tool call's error result (said to
    │                                 the avatar as an RPC error; never an HTTP answer of ours)
    └── UpstreamError                 502 upstream_error
        ├── UpstreamStatusError       502 upstream_status (upstreamStatus=...)
        ├── UpstreamUnavailable       503 upstream_unavailable
        ├── UpstreamTimeout           504 upstream_timeout
        └── UpstreamAmbiguous         504 upstream_ambiguous (create may or may not have happened)

``ConfigError`` is separate: a bad setting stops the server at start with one
line; it never reaches HTTP.
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A setting is invalid; the server refuses to start."""


class AvatarServerError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **detail: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.detail = detail

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update({k: v for k, v in self.detail.items() if v is not None})
        return {"error": body}


class BadRequest(AvatarServerError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    """Input failed validation; ``field`` names the offending field (dotted path)."""

    status = 422
    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        super().__init__(message, field=field, **kw)
        self.field = field


class Unauthorized(AvatarServerError):
    status = 401
    code = "unauthorized"


class Forbidden(AvatarServerError):
    status = 403
    code = "forbidden"


class NotFound(AvatarServerError):
    status = 404
    code = "not_found"


class Conflict(AvatarServerError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AvatarServerError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(AvatarServerError):
    status = 408
    code = "request_timeout"


class LimitExceeded(AvatarServerError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        if retry_after is not None:
            headers.setdefault("Retry-After", str(max(1, int(retry_after + 0.999))))
        super().__init__(message, headers=headers, **kw)
        self.retry_after = retry_after


class ServerBusy(AvatarServerError):
    """A start refused at once (the waiting room is full, or this instance is overloaded):
    nothing was admitted, so nothing is later failed for load."""

    status = 503
    code = "server_busy"

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        headers.setdefault("Retry-After", str(max(1, int(retry_after + 0.999))))
        super().__init__(message, headers=headers, **kw)
        self.retry_after = retry_after


class StoreUnavailable(AvatarServerError):
    """Redis does not answer (down, restarting, loading). Made in one place from redis-py's
    connection and timeout errors: ``store.health.store_unavailable``."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str = "the session store is unavailable; retry shortly", *,
                 retry_after: int = 2, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        headers.setdefault("Retry-After", str(retry_after))
        super().__init__(message, headers=headers, **kw)


class ToolCallFailed(AvatarServerError):
    """A ``backend_rpc`` tool call that has no result: unknown tool, a caller that is not the avatar's
    worker, a bad payload, or the site's backend failed, timed out or answered no JSON. The tool
    channel (``avatar_server.tools``) answers it to the avatar as an RPC error with ``message``."""

    status = 502
    code = "tool_failed"


class UpstreamError(AvatarServerError):
    status = 502
    code = "upstream_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with a non-retryable (or retries-exhausted) error status."""

    status = 502
    code = "upstream_status"

    def __init__(self, message: str, *, upstream_status: int, **kw: Any) -> None:
        super().__init__(message, upstreamStatus=upstream_status, **kw)
        self.upstream_status = upstream_status


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamAmbiguous(UpstreamTimeout):
    """A create timed out or lost its connection mid-request: it may have happened upstream.

    Never retried (a retry could start a second billed session)."""

    code = "upstream_ambiguous"
