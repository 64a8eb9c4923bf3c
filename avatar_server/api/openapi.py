"""``GET /openapi.json``: the whole API, described from the pydantic models.

One table, ``OPERATIONS``, says for every route its credentials, body model, query
parameters and answers. A module that adds routes adds its rows with ``register(...)``.
The published document holds the rows whose route the running app serves, so it never
describes a route that is not there; ``tests/api/test_openapi.py`` fails when a served
``/v1`` route has no row.

    python -m avatar_server.api.openapi --markdown > docs/api.md    # the docs page
    python -m avatar_server.api.openapi --json                      # the document itself
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..models.session_views import (
    ErrorBody,
    Health,
    Readiness,
    SessionConnected,
    SessionCreated,
    SessionPage,
    SessionView,
    WaitingRoomView,
)
from ..models.sessions import SessionConnect, SessionCreate
from ..models.sites import Site, SiteCreate, SitePage, SitePatch, SiteWithSecret
from ..models.webhooks import (
    ConversationReadyEvent,
    SessionEndedEvent,
    SessionStartedEvent,
    WebhookDelivery,
    WebhookDeliveryPage,
)

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


LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "page size")
CURSOR = Param("cursor", {"type": "string", "maxLength": 200}, "the nextCursor of the previous page")
ADMIN_ERRORS = (401, 403)
# a publishable key in the URL, for callers that cannot set a header (Runway's SDKs' connectUrl)
KEY = Param("key", {"type": "string", "pattern": "^pk_", "maxLength": 200},
            "a site's publishable key, the same as Authorization: Bearer pk_… (no other credential is "
            "accepted in a URL: 401 credential_in_url)")

register(
    Operation("GET", "/healthz", "Liveness: 200 while the process serves", "health", (), responses={200: Health}),
    Operation("GET", "/readyz", "Readiness: 200 only while Redis and the upstream answer", "health", (),
              responses={200: Readiness, 503: Readiness}),
    Operation("GET", "/openapi.json", "This document", "health", (), responses={200: None}),
    Operation("POST", "/v1/sessions", "Start a session (answers at once; provisions in the background)", "sessions",
              ("admin", "publishableKey"), SessionCreate, {201: SessionCreated},
              (400, 401, 403, 404, 409, 413, 422, 429, 502, 503),
              description="503 server_busy (with Retry-After) when the waiting room is full or the instance is "
                          "overloaded: nothing was admitted. With AVATAR_SERVER_UPSTREAM_CONCURRENCY reached, the "
                          "start waits in the waiting room (status PROVISIONING, queued, position, etaSeconds). "
                          "With a publishable key: only from an Origin in the site's allowedOrigins, for an "
                          "avatar in its avatarIds, below its maxConcurrentSessions (429 concurrency_limit with "
                          "limit and active) and the per-visitor rate limit (429 rate_limited). A custom "
                          "avatar must exist (404 avatar_not_found) and be READY (409 avatar_not_ready).",
              query=(KEY,)),
    Operation("POST", "/v1/sessions/connect", "Start a session and wait for its credentials (Runway SDK shape)",
              "sessions", ("admin", "publishableKey"), SessionConnect, {200: SessionConnected},
              (400, 401, 403, 404, 409, 413, 422, 429, 502, 503, 504),
              query=(KEY, Param("transport", {"type": "string", "pattern": "^(livekit|webrtc)(,(livekit|webrtc))?$"},
                                "the transports the caller can use; default: livekit with ?key= (Runway's "
                                "SDKs), else either")),
              description="Never answers {sessionId, sessionKey}: the server consumes the credentials. A caller "
                          "that cannot use the server's transport (the local engine: webrtc; Runway: livekit) "
                          "gets 409 transport_unsupported — Runway's SDKs work in Runway mode; with the local "
                          "engine use the <avatar-widget>."),
    Operation("GET", "/v1/sessions", "List sessions (admin)", "sessions", body=None,
              responses={200: SessionPage}, errors=(401, 403, 422),
              query=(Param("status", {"type": "string", "enum": ["active", "ended"], "default": "active"}),
                     LIMIT, Param("cursor", {"type": "string", "pattern": r"^\d{1,16}$"}, "nextCursor"))),
    Operation("GET", "/v1/sessions/{id}", "Read a session", "sessions", ("admin", "clientToken"),
              responses={200: SessionView}, errors=(401, 403, 404)),
    Operation("DELETE", "/v1/sessions/{id}", "End a session (idempotent for the admin)", "sessions",
              ("admin", "clientToken"), responses={200: SessionView}, errors=(401, 403, 404)),
    Operation("GET", "/v1/sessions/{id}/signal", "The signal WebSocket (upgrade; ?token=<clientToken>)", "sessions",
              (), responses={101: None}, errors=(400, 401, 403, 404),
              query=(Param("token", {"type": "string", "maxLength": 200}, "the session's clientToken",
                           required=True),),
              description="Server → client: status, credentials, warning (remainingSeconds), ended (reason), "
                          "pong, error. Client → server: end, ping (JSON text frames ≤ 1 KB, ≤ 30 per 10 s)."),
    Operation("GET", "/v1/waiting-room", "The waiting room (per site), the upstream slots and the request budget",
              "sessions", responses={200: WaitingRoomView}, errors=ADMIN_ERRORS),
    Operation("POST", "/v1/sites", "Create a site (returns its publishable key)", "sites", body=SiteCreate,
              responses={201: Site}, errors=(400, *ADMIN_ERRORS, 413, 422)),
    Operation("GET", "/v1/sites", "List sites, oldest first", "sites", responses={200: SitePage},
              errors=(*ADMIN_ERRORS, 422), query=(LIMIT, CURSOR)),
    Operation("GET", "/v1/sites/{id}", "Read a site", "sites", responses={200: Site}, errors=(*ADMIN_ERRORS, 404)),
    Operation("PATCH", "/v1/sites/{id}", "Change a site (maxDuration: null removes the site's own limit)", "sites",
              body=SitePatch, responses={200: Site}, errors=(400, *ADMIN_ERRORS, 404, 409, 413, 422)),
    Operation("DELETE", "/v1/sites/{id}", "Delete a site (its key stops at once; running sessions run on)",
              "sites", responses={204: None}, errors=(*ADMIN_ERRORS, 404, 409)),
    Operation("POST", "/v1/sites/{id}/rotate-key", "Replace the publishable key (the old one stops at once)",
              "sites", responses={200: Site}, errors=(*ADMIN_ERRORS, 404)),
    Operation("POST", "/v1/sites/{id}/rotate-webhook-secret",
              "Replace the webhook signing secret (shown in this answer only; the next attempt signs with it)",
              "webhooks", responses={200: SiteWithSecret}, errors=(*ADMIN_ERRORS, 404)),
    Operation("GET", "/v1/sites/{id}/webhook-deliveries", "The site's latest webhook deliveries, newest first",
              "webhooks", responses={200: WebhookDeliveryPage}, errors=(*ADMIN_ERRORS, 404, 422),
              query=(Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                           "how many"),)),
    Operation("POST", "/v1/sites/{id}/webhook-deliveries/{deliveryId}/redeliver",
              "Deliver again at once (same webhook-id and body; a settled one gets a fresh 24 h of retries)",
              "webhooks", responses={202: WebhookDelivery}, errors=(*ADMIN_ERRORS, 404)),
    Operation("GET", "/metrics", "Prometheus metrics (text format; docs/operations.md lists them)", "health",
              ("admin", "metricsToken"), responses={200: None}, errors=ADMIN_ERRORS),
)


def _register_knowledge() -> None:
    """Avatars and documents (admin); published once their routes are served."""
    try:
        from ..models.avatars import Avatar, AvatarCreate, AvatarPatch
        from ..models.documents import Document, DocumentCreate, DocumentPatch, DocumentSummary
    except ImportError:  # pragma: no cover - the models are part of the package
        return

    class AvatarPage(BaseModel):
        data: list[Avatar]
        hasMore: bool
        nextCursor: str | None

    class DocumentPage(BaseModel):
        data: list[DocumentSummary]
        hasMore: bool
        nextCursor: str | None

    up = (502, 503, 504)
    budget = ("An avatar's linked documents may total at most 50,000 tokens (the server's count, see "
              "docs/knowledge.md); a change that would pass it answers 422 knowledge_budget_exceeded with "
              "avatarId, currentTokens, documentTokens and limit, and changes nothing.")
    register(
        Operation("POST", "/v1/avatars", "Create an avatar", "avatars", body=AvatarCreate, responses={201: Avatar},
                  errors=(400, *ADMIN_ERRORS, 409, 413, 422, 429, *up),
                  description="referenceImage: an https URL naming a public host (never fetched by the server), "
                              "a runway:// URI, or a data: URI (JPEG, PNG or WebP, at most 5 MB). " + budget),
        Operation("GET", "/v1/avatars", "List avatars, oldest first", "avatars", responses={200: AvatarPage},
                  errors=(*ADMIN_ERRORS, 422, *up), query=(LIMIT, CURSOR)),
        Operation("GET", "/v1/avatars/{id}", "Read an avatar", "avatars", responses={200: Avatar},
                  errors=(*ADMIN_ERRORS, 404, *up)),
        Operation("PATCH", "/v1/avatars/{id}", "Change an avatar (documentIds replaces the whole list)", "avatars",
                  body=AvatarPatch, responses={200: Avatar}, errors=(400, *ADMIN_ERRORS, 404, 409, 413, 422, *up),
                  description=budget),
        Operation("DELETE", "/v1/avatars/{id}", "Delete an avatar (its live sessions are ended as admin)",
                  "avatars", responses={204: None}, errors=(*ADMIN_ERRORS, 404, 409, *up)),
        Operation("PUT", "/v1/avatars/{id}/documents/{documentId}", "Link a document to an avatar", "avatars",
                  responses={200: Avatar}, errors=(*ADMIN_ERRORS, 404, 409, 422, *up), description=budget),
        Operation("DELETE", "/v1/avatars/{id}/documents/{documentId}", "Unlink a document", "avatars",
                  responses={200: Avatar}, errors=(*ADMIN_ERRORS, 404, 409, *up)),
        Operation("POST", "/v1/documents", "Create a knowledge document", "documents", body=DocumentCreate,
                  responses={201: Document}, errors=(400, *ADMIN_ERRORS, 413, 422, 429, *up)),
        Operation("GET", "/v1/documents", "List documents (without content), oldest first", "documents",
                  responses={200: DocumentPage}, errors=(*ADMIN_ERRORS, 422), query=(LIMIT, CURSOR)),
        Operation("GET", "/v1/documents/{id}", "Read a document", "documents", responses={200: Document},
                  errors=(*ADMIN_ERRORS, 404, *up)),
        Operation("PATCH", "/v1/documents/{id}", "Change a document's name and/or content", "documents",
                  body=DocumentPatch, responses={200: Document},
                  errors=(400, *ADMIN_ERRORS, 404, 409, 413, 422, *up), description=budget),
        Operation("DELETE", "/v1/documents/{id}", "Delete a document (detached from every avatar)", "documents",
                  responses={204: None}, errors=(*ADMIN_ERRORS, 404, 409, *up)),
    )


_register_knowledge()


def _register_conversations() -> None:
    """Conversations and usage (admin; ``api.conversations``)."""
    from ..models.conversations import Conversation, ConversationDeleted, ConversationPage, Usage

    site = Param("siteId", {"type": "string"}, "a site's id, or admin (sessions started with the admin token)")
    avatar = Param("avatarId", {"type": "string", "maxLength": 64}, "a preset's id or a custom avatar's id")
    start = Param("from", {"type": "string", "maxLength": 40}, "ISO-8601 date-time or YYYY-MM-DD (UTC)")
    end = Param("to", {"type": "string", "maxLength": 40}, "ISO-8601 date-time or YYYY-MM-DD (UTC, that whole day)")
    register(
        Operation(
            "GET", "/v1/conversations", "List conversations, newest first (one per session that reached RUNNING)",
            "conversations", responses={200: ConversationPage}, errors=(*ADMIN_ERRORS, 422),
            query=(site, avatar, start, end,
                   Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size"),
                   Param("cursor", {"type": "string", "maxLength": 60}, "the nextCursor of the previous page")),
            description="Kept AVATAR_SERVER_CONVERSATION_RETENTION_DAYS (default 30) after the session ended. "
                        "status pending while the upstream's transcript is fetched (retried with backoff for "
                        "about five minutes), then ended/failed as the upstream says, or unavailable."),
        Operation("GET", "/v1/conversations/{id}", "Read a conversation and its transcript", "conversations",
                  responses={200: Conversation}, errors=(*ADMIN_ERRORS, 404)),
        Operation(
            "DELETE", "/v1/conversations/{id}", "Erase a conversation, ours and the upstream's", "conversations",
            responses={200: ConversationDeleted}, errors=(*ADMIN_ERRORS, 404),
            description="Ours is erased in any case; upstream says whether the upstream erased its copy "
                        "(refused, with upstreamMessage, when it did not)."),
        Operation(
            "GET", "/v1/usage", "Usage per UTC day, site and end reason, with the upstream's beside it",
            "conversations", responses={200: Usage}, errors=(*ADMIN_ERRORS, 422), query=(start, end, site, avatar),
            description="Our ledger counts conversations (sessions that reached RUNNING) on the day they "
                        "started, with our measured seconds. upstream: the upstream's /v1/avatar_usage for the "
                        "same days (every session it created, whole account), or null with upstreamError."),
    )


_register_conversations()


def _register_voices() -> None:
    """Custom voices (admin; ``api.voices``), passed to the upstream."""
    from ..models.voices import (
        VoiceCreate,
        VoiceObject,
        VoicePage,
        VoicePatch,
        VoicePreview,
        VoicePreviewRequest,
    )

    up = (502, 503, 504)
    register(
        Operation("POST", "/v1/voices", "Create a custom voice (from a text description or audio)", "voices",
                  body=VoiceCreate, responses={201: VoiceObject}, errors=(400, *ADMIN_ERRORS, 413, 422, 429, *up),
                  description="Runway's fields, checked before any upstream call. The voice is PROCESSING, then "
                              "READY (previewUrl) or FAILED; an avatar uses a READY one with voice "
                              "{type: custom, id}. Audio: an https URL naming a public host (never fetched by "
                              "the server), a runway:// URI, or a data:audio URI within the 64 KB body."),
        Operation("GET", "/v1/voices", "List custom voices (the upstream's order)", "voices",
                  responses={200: VoicePage}, errors=(*ADMIN_ERRORS, 422, *up),
                  query=(LIMIT, Param("cursor", {"type": "string", "maxLength": 1000},
                                      "the nextCursor of the previous page"))),
        Operation("GET", "/v1/voices/{id}", "Read a custom voice", "voices", responses={200: VoiceObject},
                  errors=(*ADMIN_ERRORS, 404, *up)),
        Operation("PATCH", "/v1/voices/{id}", "Rename a custom voice", "voices", body=VoicePatch,
                  responses={200: VoiceObject}, errors=(400, *ADMIN_ERRORS, 404, 413, 422, *up)),
        Operation("DELETE", "/v1/voices/{id}", "Delete a custom voice", "voices", responses={204: None},
                  errors=(*ADMIN_ERRORS, 404, *up)),
        Operation("POST", "/v1/voices/preview", "Hear a described voice before creating it", "voices",
                  body=VoicePreviewRequest, responses={200: VoicePreview},
                  errors=(400, *ADMIN_ERRORS, 413, 422, 429, *up),
                  description="url: the upstream's sample (on the local engine, a WAV it serves for an hour)."),
    )


_register_voices()


# --------------------------------------------------------------------------- building


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


# --------------------------------------------------------------------------- serving

routes = web.RouteTableDef()


@functools.lru_cache(maxsize=8)
def _spec_text(served: frozenset[tuple[str, str]]) -> str:
    return json.dumps(build_spec(served))


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(text=_spec_text(frozenset(served_routes(request.app))), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})


# --------------------------------------------------------------------------- markdown


def spec_for_default_app() -> dict[str, Any]:
    """The document a default server publishes (built from its router, without starting it)."""
    from ..app import create_app
    from ..settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(admin_token="adm_" + "0" * 32, data_dir=Path(tmp)))
        return build_spec(served_routes(app))


def to_markdown(spec: dict[str, Any]) -> str:
    schemas = spec["components"]["schemas"]
    lines = [
        "# API reference",
        "",
        "<!-- Generated by `python -m avatar_server.api.openapi --markdown > docs/api.md` from the same",
        "     table and pydantic models that `GET /openapi.json` serves. Do not edit by hand;",
        "     tests/api/test_openapi.py fails when this file is out of step. -->",
        "",
        spec["info"]["description"],
        "",
        "Credentials (`Authorization: Bearer …`):",
        "",
        *(f"- **{name}**: {s['description']}" for name, s in spec["components"]["securitySchemes"].items()),
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    for tag in sorted(by_tag):
        lines += [f"## {tag}", ""]
        for method, path, op in by_tag[tag]:
            auth = ", ".join(next(iter(s)) for s in op["security"]) or "none"
            lines += [f"### `{method} {path}`", "", op["summary"] + ".", "", f"Credentials: {auth}.", ""]
            if op.get("description"):
                lines += [op["description"], ""]
            query = [p for p in op.get("parameters", []) if p["in"] == "query"]
            if query:
                lines.append("Query: " + ", ".join(
                    f"`{p['name']}` ({_type(p['schema'], schemas)}{', required' if p['required'] else ''})"
                    for p in query) + ".")
                lines.append("")
            body = op.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]
                lines += [f"Body: {_type(ref, schemas)}.", ""]
            answers, errors = [], []
            for status, resp in op["responses"].items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and schema.get("$ref", "").endswith("/ErrorBody"):
                    errors.append(f"`{status}`")
                else:
                    answers.append(f"`{status}`" + (f" {_type(schema, schemas)}" if schema
                                                    else f" ({resp['description']})"))
            lines += ["Answers: " + ", ".join(answers) + "."]
            if errors:
                lines += ["Errors ([ErrorBody](#errorbody)): " + ", ".join(errors) + "."]
            lines.append("")
    hooks = spec.get("webhooks") or {}
    if hooks:
        lines += ["## Webhook events", "",
                  "POSTed to a site's `webhookUrl` (see docs/operations.md, *Webhooks*). Headers: "
                  + "; ".join(f"`{h}`: {text}" for h, text in WEBHOOK_HEADERS.items()) + ".", ""]
        for name, item in hooks.items():
            op = item["post"]
            ref = op["requestBody"]["content"]["application/json"]["schema"]
            lines += [f"### `{name}`", "", op["summary"].rstrip(".") + ".", "", f"Body: {_type(ref, schemas)}.", ""]
    lines += ["## Schemas", ""]
    for name in sorted(schemas):
        schema = schemas[name]
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [" ".join(schema["description"].split()), ""]
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            lines += ["| field | type | required | notes |", "|---|---|---|---|"]
            for prop, sub in props.items():
                lines.append(f"| `{prop}` | {_type(sub, schemas)} | {'yes' if prop in required else ''} | "
                             f"{_notes(sub)} |")
            lines.append("")
        elif "enum" in schema:
            lines += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
        elif "oneOf" in schema or "anyOf" in schema:
            lines += [f"{_type(schema, schemas)}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _type(schema: dict[str, Any] | None, schemas: dict[str, Any]) -> str:
    if not schema:
        return "any"
    if "$ref" in schema:
        return f"[{schema['$ref'].rsplit('/', 1)[1]}](#{schema['$ref'].rsplit('/', 1)[1].lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(_type(s, schemas) for s in schema[key])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items'), schemas)}"
    if kind == "null":
        return "null"
    return str(kind)


def _notes(schema: dict[str, Any]) -> str:
    notes = []
    if schema.get("description"):
        notes.append(" ".join(schema["description"].split()))
    for key, label in (("minLength", "min length"), ("maxLength", "max length"), ("minimum", "≥"),
                       ("maximum", "≤"), ("minItems", "min items"), ("maxItems", "max items"), ("pattern", "pattern")):
        value = schema.get(key)
        if value is None:
            for sub in schema.get("anyOf", []):
                if key in sub:
                    value = sub[key]
        if value is not None:
            notes.append(f"{label} `{value}`" if key == "pattern" else f"{label} {value}")
    if "default" in schema and schema["default"] is not None:
        notes.append(f"default `{json.dumps(schema['default'])}`")
    return "; ".join(notes).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatar_server.api.openapi")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="docs/api.md")
    group.add_argument("--json", action="store_true", help="the OpenAPI document")
    args = parser.parse_args(argv)
    spec = spec_for_default_app()
    sys.stdout.write(to_markdown(spec) if args.markdown else json.dumps(spec, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
