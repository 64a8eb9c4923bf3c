"""Middlewares: request ids, access logs, and the one place errors become HTTP responses."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import AvatarServerError, StoreUnavailable
from ..logs import request_id_var
from ..store.health import store_unavailable
from .security import too_large

log = logging.getLogger("avatar_server.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: AvatarServerError) -> web.Response:
    resp = web.json_response(exc.to_body(), status=exc.status)
    for k, v in exc.headers.items():
        resp.headers[k] = v
    return resp


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")
    if not (0 < len(rid) <= 64 and rid.replace("-", "").isalnum()):
        rid = secrets.token_hex(8)
    token = request_id_var.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        resp.headers["X-Request-Id"] = rid
        return resp
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["X-Request-Id"] = rid
        raise
    finally:
        # the engine's status polls (several a second per provisioning session) only at DEBUG
        quiet = request.method == "GET" and status < 400 and request.path.startswith("/engine/")
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "request",
            extra={"method": request.method, "path": request.path, "status": status,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        request_id_var.reset(token)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the error hierarchy (and aiohttp's own HTTP errors) to the JSON error shape."""
    try:
        return await handler(request)
    except AvatarServerError as exc:
        # a store outage is logged once, by the store (store.health), not once per request
        if exc.status >= 500 and not isinstance(exc, StoreUnavailable):
            log.warning("request failed: %s", exc.code, extra={"error": exc.code, "path": request.path})
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(too_large(request.path))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        body = AvatarServerError(exc.reason, code=code).to_body()
        return web.json_response(body, status=exc.status, headers={
            k: v for k, v in exc.headers.items() if k.lower() in ("allow",)
        })
    except Exception as exc:
        unavailable = store_unavailable(exc)  # Redis does not answer: 503 + Retry-After
        if unavailable is not None:
            return error_response(unavailable)
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(AvatarServerError("internal error; the request id identifies it in the logs"))
