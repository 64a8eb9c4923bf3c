"""Request validation in Runway's style: every problem as an issue ``{code, path, message}``.

Runway validates with zod; a refused body answers 400 ``{"error": "Invalid request body: <first>",
"issues": [...]}``. ``Issues`` collects them; ``Issues.raise_if_any()`` raises the ``EngineError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from avatar_server.engine.errors import EngineError


class Issues:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, code: str, path: list[str | int], message: str) -> None:
        self.items.append({"code": code, "path": path, "message": message})

    def string(
        self, value: Any, path: list[str | int], lo: int, hi: int, pattern: re.Pattern[str] | None = None
    ) -> None:
        if not isinstance(value, str):
            self.add("invalid_type", path, f"Expected string, received {type_name(value)}")
        elif len(value) < lo:
            self.add("too_small", path, f"String must contain at least {lo} character(s)")
        elif len(value) > hi:
            self.add("too_big", path, f"String must contain at most {hi} character(s)")
        elif pattern is not None and not pattern.match(value):
            self.add("invalid_string", path, "Invalid format")

    def array(self, value: Any, path: list[str | int], hi: int) -> bool:
        if not isinstance(value, list):
            self.add("invalid_type", path, f"Expected array, received {type_name(value)}")
            return False
        if len(value) > hi:
            self.add("too_big", path, f"Array must contain at most {hi} element(s)")
            return False
        return True

    def obj(self, value: Any, path: list[str | int]) -> bool:
        if not isinstance(value, dict):
            self.add("invalid_type", path, f"Expected object, received {type_name(value)}")
            return False
        return True

    def query_limit(self, query: Mapping[str, str], default: int, most: int) -> int:
        """A list's ``limit`` query parameter: an integer from 1 to ``most``, ``default`` when absent."""
        if "limit" not in query:
            return default
        try:
            limit = int(query["limit"])
        except ValueError:
            self.add("invalid_type", ["limit"], "Expected integer")
            return default
        if not 1 <= limit <= most:
            self.add("too_small" if limit < 1 else "too_big", ["limit"], f"Number must be between 1 and {most}")
        return limit

    def raise_if_any(self) -> None:
        if self.items:
            first = self.items[0]
            where = ".".join(str(p) for p in first["path"])
            raise EngineError(400, f"Invalid request body: {where}: {first['message']}", self.items)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
