"""The engine's own errors; nothing in ``engine/`` raises the server's (``avatar_server.errors``).

    EngineError            answered in Runway's shape by ``engine.http.errors`` (the one place
                           that turns errors into the engine's HTTP answers):
                           ``{"error": message, "issues"?: [...]}``, ``status``, ``Retry-After``
    ├── BadRequest         400 (e.g. an unusable SDP offer; the caller may retry)
    └── Conflict           409 (e.g. a second offer for a session, or the engine shutting down)
    EngineConfigError      a bad ``AVATAR_ENGINE_*`` setting: the engine (or the server that
                           embeds it) refuses to start with one line; never an HTTP answer
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """An error the engine answers in Runway's shape: ``{"error": message, "issues"?: [...]}``."""

    def __init__(
        self,
        status: int,
        message: str,
        issues: list[dict[str, Any]] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.issues = issues
        self.retry_after = retry_after


class BadRequest(EngineError):
    def __init__(self, message: str, issues: list[dict[str, Any]] | None = None) -> None:
        super().__init__(400, message, issues)


class Conflict(EngineError):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class EngineConfigError(Exception):
    """An ``AVATAR_ENGINE_*`` setting is invalid (the message names the variable, on one line)."""
