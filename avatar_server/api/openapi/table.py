"""The operation table: one row (``Operation``) per served route of the public API.

A row says the route's credentials, body model, query parameters and answers. A module that adds
routes adds its rows with ``register(...)`` (``rows.py`` holds them all); the document
(``document.py``) describes the rows whose route the running app serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    location: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    security: tuple[str, ...] = ("admin",)
    body: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    description: str = ""


OPERATIONS: dict[tuple[str, str], Operation] = {}


def register(*ops: Operation) -> None:
    for op in ops:
        OPERATIONS[(op.method.upper(), op.path)] = op

