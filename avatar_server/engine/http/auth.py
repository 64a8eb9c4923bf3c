"""Who may call the engine: ``Authorization: Bearer <api key>`` and ``X-Runway-Version``."""

from __future__ import annotations

import hmac

from aiohttp import web

from avatar_server.bearer import MalformedCredential, parse_bearer
from avatar_server.engine.errors import EngineError
from avatar_server.engine.http.context import ENGINE_CONTEXT

RUNWAY_VERSION = "2024-11-06"


def bearer(request: web.Request) -> str | None:
    """The bearer token, None without one; 401 for a malformed ``Authorization``."""
    try:
        return parse_bearer(request.headers.get("Authorization", ""))
    except MalformedCredential:
        raise EngineError(401, "Invalid API key") from None


def require_api_key(request: web.Request) -> None:
    token = bearer(request)
    if token is None:
        raise EngineError(401, "Missing API key: send Authorization: Bearer <key>")
    keys = request.app[ENGINE_CONTEXT].api_keys()
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys if key):
        raise EngineError(401, "Invalid API key")


def require_version(request: web.Request, *, optional: bool = False) -> None:
    version = request.headers.get("X-Runway-Version")
    if version is None:
        if optional:
            return
        raise EngineError(400, f"Missing X-Runway-Version header (expected {RUNWAY_VERSION})")
    if version != RUNWAY_VERSION:
        raise EngineError(400, f"Unsupported X-Runway-Version {version!r} (expected {RUNWAY_VERSION})")


def authorize(request: web.Request) -> None:
    """A Runway route's check: the API key, then the version header."""
    require_api_key(request)
    require_version(request)
