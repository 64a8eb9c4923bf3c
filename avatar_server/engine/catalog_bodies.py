"""Validation of the engine's avatar and document requests, with Runway's limits (the OpenAPI JSON).

Unknown body keys are ignored (zod's default); every refusal is a 400 with ``issues``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from avatar_server.engine.errors import EngineError
from avatar_server.engine.validation import Issues, type_name
from avatar_server.runway import UUID4

VOICE_PRESETS: tuple[str, ...] = (
    "victoria", "vincent", "clara", "drew", "skye", "max", "morgan", "felix", "mia", "marcus",
    "summer", "ruby", "aurora", "jasper", "leo", "adrian", "nina", "emma", "blake", "david",
    "maya", "nathan", "sam", "georgia", "petra", "adam", "zach", "violet", "roman", "luna",
)  # fmt: skip
_FEMALE_VOICES = frozenset(
    "victoria clara skye mia summer ruby aurora nina emma maya georgia petra violet luna morgan".split()
)

NAME_MAX = 50
PERSONALITY_MAX = 10_000
START_SCRIPT_MAX = 2_000
DOCUMENT_IDS_MAX = 50
DOCUMENT_NAME_MAX = 255
DOCUMENT_CONTENT_MAX = 200_000
IMAGE_MIN = 13
IMAGE_LIMITS = (("https://", 2_048), ("runway://", 5_000), ("data:image/", 5_242_880))
LIMIT_DEFAULT, LIMIT_MAX = 50, 100
CURSOR_MAX = 1_000


def voice_response(voice: Mapping[str, Any]) -> dict[str, Any]:
    """The avatar object's ``voice``: Runway adds a display name and description."""
    if voice["type"] == "runway-live-preset":
        preset = voice["presetId"]
        kind = "Female" if preset in _FEMALE_VOICES else "Male"
        return {"type": "runway-live-preset", "presetId": preset, "name": preset.capitalize(),
                "description": f"{kind} live preset voice"}
    return {"type": "custom", "id": voice["id"], "deleted": False, "name": "Custom voice", "description": None}


def _checked(
    body: Any,
    collect: Callable[[Issues, dict[str, Any]], dict[str, Any]],
    *,
    required: tuple[str, ...] = (),
    when_empty: str | None = None,
) -> dict[str, Any]:
    """A JSON object's fields as ``collect`` checks them: every issue at once (a missing ``required``
    key among them); with ``when_empty``, a body with none of the fields is refused with that message."""
    if not isinstance(body, dict):
        raise EngineError(400, "Invalid request body: expected a JSON object")
    issues = Issues()
    for key in required:
        if key not in body:
            issues.add("invalid_type", [key], "Required")
    fields = collect(issues, body)
    issues.raise_if_any()
    if when_empty is not None and not fields:
        raise EngineError(400, when_empty,
                          [{"code": "custom", "path": [], "message": "At least one field must be provided"}])
    return fields


# --- avatars -------------------------------------------------------------------------------------


def validate_avatar_create(body: Any) -> dict[str, Any]:
    fields = _checked(body, _avatar_fields, required=("name", "referenceImage", "personality", "voice"))
    fields.setdefault("startScript", None)
    fields.setdefault("documentIds", [])
    fields.setdefault("imageProcessing", "optimize")
    return fields


def validate_avatar_patch(body: Any) -> dict[str, Any]:
    """The fields present (``startScript: None`` clears it); at least one is required."""
    return _checked(body, lambda issues, b: _avatar_fields(issues, b, patch=True),
                    when_empty="Invalid request body: at least one field must be provided")


def _avatar_fields(issues: Issues, body: dict[str, Any], *, patch: bool = False) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "name" in body:
        issues.string(body["name"], ["name"], 1, NAME_MAX)
        fields["name"] = body["name"]
    if "personality" in body:
        issues.string(body["personality"], ["personality"], 1, PERSONALITY_MAX)
        fields["personality"] = body["personality"]
    if "startScript" in body:
        if not (patch and body["startScript"] is None):
            issues.string(body["startScript"], ["startScript"], 0, START_SCRIPT_MAX)
        fields["startScript"] = body["startScript"]
    if "referenceImage" in body:
        _check_image(issues, body["referenceImage"])
        fields["referenceImage"] = body["referenceImage"]
    if "voice" in body:
        fields["voice"] = _check_voice(issues, body["voice"])
    if "documentIds" in body:
        ids = body["documentIds"]
        if issues.array(ids, ["documentIds"], DOCUMENT_IDS_MAX):
            for i, doc_id in enumerate(ids):
                if not isinstance(doc_id, str) or not UUID4.match(doc_id):
                    issues.add("invalid_string", ["documentIds", i], "Invalid uuid")
            fields["documentIds"] = list(dict.fromkeys(d.lower() for d in ids if isinstance(d, str)))
    if "imageProcessing" in body:
        if body["imageProcessing"] not in ("optimize", "none"):
            issues.add("invalid_enum_value", ["imageProcessing"],
                       "Invalid enum value. Expected 'optimize' | 'none'")
        fields["imageProcessing"] = body["imageProcessing"]
    return fields


def _check_image(issues: Issues, value: Any) -> None:
    path: list[str | int] = ["referenceImage"]
    if not isinstance(value, str):
        issues.add("invalid_type", path, f"Expected string, received {type_name(value)}")
        return
    for prefix, longest in IMAGE_LIMITS:
        if value.startswith(prefix):
            if len(value) < IMAGE_MIN:
                issues.add("too_small", path, f"String must contain at least {IMAGE_MIN} character(s)")
            elif len(value) > longest:
                issues.add("too_big", path, f"String must contain at most {longest} character(s)")
            return
    issues.add("invalid_union", path, "Invalid input: expected an https:// URL, a runway:// URI or a "
                                      "data:image/ URI")


def _check_voice(issues: Issues, voice: Any) -> dict[str, Any] | None:
    if not issues.obj(voice, ["voice"]):
        return None
    kind = voice.get("type")
    if kind == "runway-live-preset":
        if voice.get("presetId") not in VOICE_PRESETS:
            issues.add("invalid_enum_value", ["voice", "presetId"],
                       f"Invalid enum value. Expected one of: {', '.join(VOICE_PRESETS)}")
            return None
        return {"type": kind, "presetId": voice["presetId"]}
    if kind == "custom":
        voice_id = voice.get("id")
        if not isinstance(voice_id, str) or not UUID4.match(voice_id):
            issues.add("invalid_string", ["voice", "id"], "Invalid uuid")
            return None
        return {"type": kind, "id": voice_id.lower()}
    issues.add("invalid_union_discriminator", ["voice", "type"],
               "Invalid discriminator value. Expected 'runway-live-preset' | 'custom'")
    return None


# --- documents ----------------------------------------------------------------------------------


def validate_document_create(body: Any) -> dict[str, Any]:
    return _checked(body, _document_fields, required=("name", "content"))


def validate_document_patch(body: Any) -> dict[str, Any]:
    return _checked(body, _document_fields,
                    when_empty="Invalid request body: at least one of name and content must be provided")


def _document_fields(issues: Issues, body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "name" in body:
        issues.string(body["name"], ["name"], 1, DOCUMENT_NAME_MAX)
        fields["name"] = body["name"]
    if "content" in body:
        issues.string(body["content"], ["content"], 1, DOCUMENT_CONTENT_MAX)
        fields["content"] = body["content"]
    return fields


# --- list queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    limit: int
    after: str | None  # the index member the page starts after (decoded cursor)
    sort: str = "createdAt"
    descending: bool = True


def parse_list_query(query: Mapping[str, str], *, documents: bool, member_ok: Any) -> ListQuery:
    """``limit`` (1–100, default 50), ``cursor``; for documents also ``sort`` and ``order``."""
    issues = Issues()
    limit = issues.query_limit(query, LIMIT_DEFAULT, LIMIT_MAX)
    sort, order = "createdAt", "desc"
    if documents:
        sort = query.get("sort", sort)
        order = query.get("order", order)
        if sort not in ("createdAt", "updatedAt"):
            issues.add("invalid_enum_value", ["sort"], "Invalid enum value. Expected 'createdAt' | 'updatedAt'")
        if order not in ("asc", "desc"):
            issues.add("invalid_enum_value", ["order"], "Invalid enum value. Expected 'asc' | 'desc'")
    after = None
    if "cursor" in query:
        cursor = query["cursor"]
        decoded = decode_cursor(cursor) if 1 <= len(cursor) <= CURSOR_MAX else None
        if decoded is None or not member_ok(decoded.get("m", "")):
            issues.add("custom", ["cursor"], "Invalid cursor")
        elif documents and (decoded.get("s"), decoded.get("o")) != (sort, order):
            issues.add("custom", ["cursor"], "The cursor belongs to a listing with another sort or order")
        else:
            after = decoded["m"]
    if issues.items:
        first = issues.items[0]
        raise EngineError(400, f"Invalid query: {first['path'][0]}: {first['message']}", issues.items)
    return ListQuery(limit=limit, after=after, sort=sort, descending=order == "desc")


def encode_cursor(member: str, query: ListQuery) -> str:
    raw = json.dumps({"m": member, "s": query.sort, "o": "desc" if query.descending else "asc"},
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("m", "s", "o")):
        return None
    return value
