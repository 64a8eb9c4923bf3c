"""Request bodies of the engine: JSON reading, and Runway's create-session schema.

A refused body answers 400 ``{"error": "Invalid request body: <first issue>", "issues": [...]}``
(``engine.validation.Issues``), as Runway's zod validation does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from avatar_server import jsonlimits
from avatar_server.engine.errors import EngineError
from avatar_server.engine.validation import Issues, type_name
from avatar_server.runway import UUID4

PRESET_AVATARS = frozenset(
    {
        "game-character", "music-superstar", "game-character-man", "cat-character", "influencer",
        "tennis-coach", "human-resource", "fashion-designer", "cooking-teacher",
    }
)  # fmt: skip
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PARAM_TYPES = ("string", "integer", "number", "boolean", "array", "object")
_ITEM_TYPES = ("string", "integer", "number", "boolean")


async def json_body(request: web.Request) -> Any:
    """The request's JSON (within ``jsonlimits``); 400 when it is not JSON."""
    try:
        return await request.json(loads=jsonlimits.loads)
    except jsonlimits.JsonLimitError as exc:  # too deep, a number too large, NaN/Infinity
        raise EngineError(400, f"Invalid request body: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EngineError(400, "Invalid request body: malformed JSON") from None


def validate_create_body(body: Any) -> dict[str, Any]:
    """Check a create body like Runway does; return the normalised fields or raise 400 with issues."""
    if not isinstance(body, dict):
        raise EngineError(400, "Invalid request body: expected a JSON object")
    issues = Issues()
    if "model" not in body:
        issues.add("invalid_type", ["model"], "Required")
    elif body["model"] != "gwm1_avatars":
        issues.add("invalid_literal", ["model"], 'Invalid literal value, expected "gwm1_avatars"')
    avatar = body.get("avatar")
    if avatar is None:
        issues.add("invalid_type", ["avatar"], "Required")
    elif issues.obj(avatar, ["avatar"]):
        kind = avatar.get("type")
        if kind == "runway-preset":
            if avatar.get("presetId") not in PRESET_AVATARS:
                issues.add(
                    "invalid_enum_value",
                    ["avatar", "presetId"],
                    f"Invalid enum value. Expected one of: {', '.join(sorted(PRESET_AVATARS))}",
                )
        elif kind == "custom":
            avatar_id = avatar.get("avatarId")
            if not isinstance(avatar_id, str) or not UUID4.match(avatar_id):
                issues.add("invalid_string", ["avatar", "avatarId"], "Invalid uuid")
        else:
            issues.add(
                "invalid_union_discriminator",
                ["avatar", "type"],
                "Invalid discriminator value. Expected 'runway-preset' | 'custom'",
            )
    max_duration = body.get("maxDuration", 300)
    if isinstance(max_duration, float) and max_duration.is_integer():
        max_duration = int(max_duration)
    if not isinstance(max_duration, int) or isinstance(max_duration, bool):
        issues.add("invalid_type", ["maxDuration"], f"Expected integer, received {type_name(max_duration)}")
    elif max_duration < 10:
        issues.add("too_small", ["maxDuration"], "Number must be greater than or equal to 10")
    elif max_duration > 1800:
        issues.add("too_big", ["maxDuration"], "Number must be less than or equal to 1800")
    if "personality" in body:
        issues.string(body["personality"], ["personality"], 1, 10000)
    if "startScript" in body:
        issues.string(body["startScript"], ["startScript"], 1, 2000)
    tools = body.get("tools", [])
    if issues.array(tools, ["tools"], 20):
        for i, tool in enumerate(tools):
            _check_tool(issues, tool, ["tools", i])
    for unsupported in ("integration", "livekit"):
        if unsupported in body:
            issues.add("custom", [unsupported], f"{unsupported} is not supported by the local engine")
    issues.raise_if_any()
    fields: dict[str, Any] = {
        "avatar": {k: avatar[k] for k in ("type", "presetId", "avatarId") if k in avatar},
        "maxDuration": max_duration,
        "tools": tools,
    }
    for key in ("personality", "startScript"):
        if key in body:
            fields[key] = body[key]
    return fields


def _check_tool(issues: Issues, tool: Any, path: list[str | int]) -> None:
    if not issues.obj(tool, path):
        return
    if tool.get("type") not in ("client_event", "backend_rpc"):
        issues.add(
            "invalid_union_discriminator",
            [*path, "type"],
            "Invalid discriminator value. Expected 'client_event' | 'backend_rpc'",
        )
    issues.string(tool.get("name"), [*path, "name"], 1, 64, _NAME)
    issues.string(tool.get("description"), [*path, "description"], 1, 1024)
    params = tool.get("parameters", [])
    if not issues.array(params, [*path, "parameters"], 20):
        return
    for j, param in enumerate(params):
        ppath: list[str | int] = [*path, "parameters", j]
        if not issues.obj(param, ppath):
            continue
        issues.string(param.get("name"), [*ppath, "name"], 1, 64, _NAME)
        issues.string(param.get("description"), [*ppath, "description"], 1, 1024)
        if "required" in param and not isinstance(param["required"], bool):
            issues.add("invalid_type", [*ppath, "required"], "Expected boolean")
        ptype = param.get("type")
        if ptype not in _PARAM_TYPES:
            issues.add(
                "invalid_union_discriminator",
                [*ppath, "type"],
                f"Invalid discriminator value. Expected {' | '.join(repr(t) for t in _PARAM_TYPES)}",
            )
        elif ptype == "string" and "enum" in param:
            if issues.array(param["enum"], [*ppath, "enum"], 20):
                for k, value in enumerate(param["enum"]):
                    issues.string(value, [*ppath, "enum", k], 0, 64)
        elif ptype == "array":
            items = param.get("items")
            if items is None:
                issues.add("invalid_type", [*ppath, "items"], "Required")
            elif issues.obj(items, [*ppath, "items"]) and items.get("type") not in _ITEM_TYPES:
                issues.add("invalid_enum_value", [*ppath, "items", "type"], "Invalid enum value")
        elif ptype == "object":
            if "properties" not in param:
                issues.add("invalid_type", [*ppath, "properties"], "Required")
            else:
                issues.array(param["properties"], [*ppath, "properties"], 20)
