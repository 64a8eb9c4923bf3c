"""Reading request bodies: JSON, then a pydantic model; every refusal names the field."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

import pydantic
from aiohttp import web

from .. import appkeys as K
from .. import jsonlimits
from ..errors import BadRequest, RequestTimeout, ValidationFailed
from ..models.common import validate_body

M = TypeVar("M", bound=pydantic.BaseModel)


async def read_json(request: web.Request) -> Any:
    ctype = request.content_type
    if request.body_exists and ctype not in ("application/json", "text/plain", "application/octet-stream", ""):
        raise BadRequest("send the body as application/json", code="unsupported_media_type", field="body")
    limit = request.config_dict[K.SETTINGS].body_timeout
    try:
        async with asyncio.timeout(limit):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"body: the request body did not arrive within {limit:g} s", field="body") from None
    if not raw.strip():
        raise ValidationFailed("body: a JSON object is required", field="body")
    try:
        return jsonlimits.loads(raw)
    except jsonlimits.JsonLimitError as exc:  # too deep, a number too large, NaN/Infinity
        raise BadRequest(f"body: {exc}", code="invalid_json", field="body") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("body: the request body is not valid JSON", code="invalid_json", field="body") from None


async def parse(request: web.Request, model: type[M]) -> M:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationFailed("body: a JSON object is required", field="body")
    return validate_body(model, data)  # type: ignore[no-any-return]


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number", field=name) from None
    if not lo <= value <= hi:
        raise ValidationFailed(f"{name} must be between {lo} and {hi}", field=name)
    return value
