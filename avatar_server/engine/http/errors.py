"""The one place engine errors become HTTP answers, in Runway's shape.

    EngineError        its ``status``; ``{"error": message, "issues"?: [...]}``; ``Retry-After``
    aiohttp HTTP errors (404 no route, 405, 413 …)   ``{"error": reason}`` (``Allow`` kept)
    anything else      500 ``{"error": "Internal server error"}`` (logged with its traceback)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from avatar_server.engine.errors import EngineError

log = logging.getLogger(__name__)


def seconds(value: float) -> str:
    """A ``Retry-After`` value: whole seconds without a fraction, else as short as it goes."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def error_response(exc: EngineError, headers: Mapping[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": exc.message}
    if exc.issues:
        body["issues"] = exc.issues
    all_headers = dict(headers or {})
    if exc.retry_after is not None:
        all_headers["Retry-After"] = seconds(exc.retry_after)
    return web.json_response(body, status=exc.status, headers=all_headers or None)


@web.middleware
async def runway_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except EngineError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status, headers=_allow_header(exc))
    except Exception:
        log.exception("engine: unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "Internal server error"}, status=500)


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
