"""The engine's one error: answered in Runway's shape ``{"error": message, "issues"?: [...]}``."""

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
