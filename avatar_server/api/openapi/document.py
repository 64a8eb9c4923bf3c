"""The OpenAPI 3.1 document, built from the operation table and the pydantic models.

``build_spec(routes)`` describes the rows of those routes (``served_routes(app)``: what the app
serves, so the document never describes a route that is not there), the webhook events and every
model they name. ``undocumented(app)`` lists the served ``/v1`` routes that have no row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ...models.session_views import ErrorBody
from ...models.webhooks import ConversationReadyEvent, SessionEndedEvent, SessionStartedEvent
from .table import OPERATIONS, Operation

TITLE = "avatar_server API"
VERSION = "1.0.0"
REF = "#/components/schemas/{model}"

ERROR_TEXT = {
    400: "Bad input (the body is not JSON, or not the expected media type)",
    401: "No credential, or one that is not valid",
    403: "A credential that may not do this (e.g. a publishable key outside its site's origins)",
    404: "Not found",
    408: "The request body did not arrive in time",
    409: "State conflict (`Retry-After` when it is a busy lock)",
    413: "Body too large (64 KB; 6 MB on avatar routes, 3 MB on document routes)",
    422: "Validation failed; `error.field` names the field",
    429: "A limit was hit (`Retry-After` says when to try again)",
    502: "The upstream refused or failed",
    503: "The upstream is unavailable",
    504: "The upstream timed out",
}

RETRY_AFTER_STATUSES = (409, 429, 503)

SECURITY_SCHEMES = {
    "admin": {"type": "http", "scheme": "bearer", "description": "The admin token (AVATAR_SERVER_ADMIN_TOKEN)."},
    "publishableKey": {"type": "http", "scheme": "bearer",
                       "description": "A site's publishable key (pk_…), from a page on one of the site's "
                                      "allowedOrigins; starts sessions only."},
    "clientToken": {"type": "http", "scheme": "bearer",
                    "description": "A session's clientToken (ct_…): reads and ends that session only, "
                                   "until it ends."},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "AVATAR_SERVER_METRICS_TOKEN: reads GET /metrics only."},
}

# The OpenAPI document's ``webhooks``: event name → (body model, summary). Each is POSTed to the
# site's webhookUrl, signed as Standard Webhooks says (webhook-id, webhook-timestamp,
# webhook-signature: v1,<HMAC-SHA256 with the site's whsec_ secret>).
WEBHOOK_EVENTS: dict[str, type[BaseModel]] = {
    "session.started": SessionStartedEvent,
    "session.ended": SessionEndedEvent,
    "conversation.ready": ConversationReadyEvent,
}
WEBHOOK_HEADERS = {
    "webhook-id": "the delivery's id (msg_…): the same on every retry and redelivery — drop duplicates by it",
    "webhook-timestamp": "the attempt's time, epoch seconds (refuse ones more than 5 minutes off)",
    "webhook-signature": "v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>.<body>\"> keyed with the "
                         "base64-decoded part of the site's webhookSecret after whsec_",
}


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.resource is None or route.method in ("HEAD", "OPTIONS", "*"):
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path:
            out.add((route.method.upper(), path))
    return out


def undocumented(app: web.Application) -> list[tuple[str, str]]:
    """Served routes of the public API (not the engine) with no row in ``OPERATIONS``."""
    return sorted(r for r in served_routes(app)
                  if r not in OPERATIONS and (r[1].startswith("/v1/") or r[1] in ("/healthz", "/readyz")))


def build_spec(routes: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
    wanted = set(routes) if routes is not None else set(OPERATIONS)
    ops = [op for key, op in sorted(OPERATIONS.items(), key=lambda kv: (kv[0][1], kv[0][0])) if key in wanted]
    models: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for op in ops:
        if op.body is not None:
            models[(op.body, "validation")] = None
        for m in op.responses.values():
            if m is not None:
                models[(m, "serialization")] = None
    for event_model in WEBHOOK_EVENTS.values():
        models[(event_model, "serialization")] = None
    key_map, defs = models_json_schema(list(models), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, key_map)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION,
                 "description": "Sessions, sites, avatars and knowledge documents of avatar_server. "
                                "JSON, camelCase; errors are {\"error\": {\"code\", \"message\", ...}}."},
        "paths": paths,
        "webhooks": {name: _webhook(name, model, key_map) for name, model in WEBHOOK_EVENTS.items()},
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


def _webhook(name: str, model: type[BaseModel], key_map: dict[Any, Any]) -> dict[str, Any]:
    doc = (model.__doc__ or name).strip().splitlines()[0]
    return {"post": {
        "operationId": "webhook_" + name.replace(".", "_"),
        "summary": doc,
        "tags": ["webhooks"],
        "parameters": [{"name": h, "in": "header", "required": True, "schema": {"type": "string"},
                        "description": text} for h, text in WEBHOOK_HEADERS.items()],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": key_map[(model, "serialization")]}}},
        "responses": {"2XX": {"description": "received (any other answer, or none within the timeout, is "
                                             "retried with backoff for 24 h)"}},
    }}


def _operation(op: Operation, key_map: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": f"{op.method.lower()}_{op.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"
                       .replace("-", "_").replace(".", "_"),
        "summary": op.summary,
        "tags": [op.tag],
        "security": [{name: []} for name in op.security],
    }
    if op.description:
        out["description"] = op.description
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1,
                                                                        "maxLength": 64}}
              for name in _path_params(op.path)]
    params += [{"name": p.name, "in": p.location, "required": p.required, "schema": p.schema,
                **({"description": p.description} if p.description else {})} for p in op.query]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": key_map[(op.body, "validation")]}}}
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": model.__doc__.strip().splitlines()[0]
                                 if model is not None and model.__doc__ else _status_text(status)}
        if model is not None:
            entry["content"] = {"application/json": {"schema": key_map[(model, "serialization")]}}
        responses[str(status)] = entry
    error_ref = key_map[(ErrorBody, "serialization")]
    errors = sorted({*op.errors, *((408,) if op.body is not None else ())})  # every body has a deadline
    for status in errors:
        entry = {"description": ERROR_TEXT.get(status, "Error"),
                 "content": {"application/json": {"schema": error_ref}}}
        if status in RETRY_AFTER_STATUSES:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                "schema": {"type": "integer", "minimum": 0}}}
        responses[str(status)] = entry
    out["responses"] = responses
    return out


def _status_text(status: int) -> str:
    return {101: "Switching Protocols (WebSocket)", 204: "No Content"}.get(status, "OK")


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]

