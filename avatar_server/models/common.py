"""Shared pieces of the public models: base configs, pages, timestamps, and the one
translation of a pydantic ``ValidationError`` into our 422.

Field names are camelCase Python attributes, exactly as they appear in JSON (as in
Runway's API), so a validation error's ``loc`` is already the public field path.

- ``RequestBody``: bodies sent to us. Unknown fields are refused (``extra="forbid"``).
- ``ResponseModel``: what we answer with. Unknown fields are dropped (``extra="ignore"``)
  so an upstream object with extra keys can be read into it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from avatar_server.errors import ValidationFailed
from avatar_server.runway import is_uuid4, iso_ms

T = TypeVar("T")



def _uuid4(value: str) -> str:
    if not is_uuid4(value):
        raise ValueError("Input should be a UUID (version 4)")
    return value.lower()


Uuid4 = Annotated[str, AfterValidator(_uuid4)]
"""A UUID v4 as a string, normalised to lower case."""

# Control characters: none at all in a name (one line: C0, DEL, C1); free text (a personality,
# a start script, a document) may break lines and indent (tab, LF, CR) but holds no other C0.
_NAME_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _refuse(pattern: re.Pattern[str], value: str, allowed: str) -> str:
    found = pattern.search(value)
    if found is not None:
        raise ValueError(f"may not contain control characters{allowed} (found U+{ord(found.group()):04X})")
    return value


NoControls = AfterValidator(lambda value: _refuse(_NAME_CONTROLS, value, ""))
"""For names and other one-line strings: no control character (NUL, line breaks, tabs, DEL, C1)."""

TextControls = AfterValidator(lambda value: _refuse(_TEXT_CONTROLS, value, " other than tab and line breaks"))
"""For free text: tabs and line breaks (LF, CR) allowed, NUL and the other C0 controls refused."""


class RequestBody(BaseModel):
    """Base of request bodies: camelCase fields, unknown fields refused."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    """Base of response objects: camelCase fields, unknown input fields ignored."""

    model_config = ConfigDict(extra="ignore")


def _to_datetime(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_to_datetime),
    PlainSerializer(iso_ms, return_type=str),
]
"""Accepts epoch seconds, a datetime or an ISO string; serialises as ``...T..:..:..sssZ``."""


class Page(ResponseModel, Generic[T]):
    """One page of a list: ``{data, hasMore, nextCursor}`` (``nextCursor`` null on the last page)."""

    data: list[T]
    hasMore: bool
    nextCursor: str | None = None


def is_page_cursor(value: str) -> bool:
    """Whether ``value`` could be the ``nextCursor`` of a list kept in age order (sites, avatars,
    documents): ``<createdAt ms, 15 digits>:<id>``, the last member a page showed
    (``store.lex_index``). A cursor a client sends back is checked with this before any read."""
    head, sep, tail = value.partition(":")
    return bool(sep) and len(head) == 15 and head.isdigit() and 0 < len(tail) <= 64


# --------------------------------------------------------------------------- errors

# Error types whose pydantic message quotes the input (which may be a multi-megabyte
# data URI, or a secret pasted in the wrong field): their message is replaced.
_ECHOING_TYPES = {
    "union_tag_invalid": "Input should be one of {expected_tags}",
    "union_tag_not_found": "Field required",
    "json_invalid": "Invalid JSON",
}

_SEGMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``('voice', 'custom', 'id')`` → ``voice.id``; ``('documentIds', 3)`` → ``documentIds.3``.

    Union tag segments pydantic inserts (``runway-live-preset``, ``function-after[...]``)
    are dropped: a segment that is not an identifier (or an index) is not a field."""
    parts: list[str] = []
    for seg in loc:
        if isinstance(seg, int):
            parts.append(str(seg))
        elif _SEGMENT_NAME.match(seg):
            parts.append(seg)
    return ".".join(parts)


def _issue(err: Any) -> dict[str, str]:
    loc = tuple(err.get("loc", ()))
    etype = err.get("type", "")
    field = _field_path(loc)
    if etype.startswith("union_tag"):
        # The error sits on the union; the field at fault is its discriminator. Models name
        # the custom error type of a callable discriminator ``union_tag_<something>``.
        field = f"{field}.type" if field else "type"
    ctx = err.get("ctx") or {}
    message = _ECHOING_TYPES.get(etype)
    if message is not None and (etype != "union_tag_invalid" or "expected_tags" in ctx):
        message = message.format(expected_tags=ctx.get("expected_tags"))
    else:
        message = str(err.get("msg", "is invalid"))
        # "Value error, <ours>" → "<ours>"
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return {"field": field, "message": message}


def validation_error_from(exc: pydantic.ValidationError) -> ValidationFailed:
    """The FIRST error as a 422 naming its field (dotted camelCase path, e.g. ``voice.presetId``);
    ``issues`` lists every error as ``{field, message}``. Input values are never echoed."""
    issues = [_issue(err) for err in exc.errors(include_url=False, include_input=False)]
    if not issues:  # pragma: no cover - pydantic never raises an empty ValidationError
        return ValidationFailed("Invalid request body", field=None, issues=[])
    first = issues[0]
    where = first["field"] or "body"
    return ValidationFailed(f"{where}: {first['message']}", field=first["field"] or None, issues=issues)


def validate_body(model: type[pydantic.BaseModel], data: Any) -> Any:
    """``model.model_validate(data)`` with a ``ValidationFailed`` instead of pydantic's error."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error_from(exc) from None
