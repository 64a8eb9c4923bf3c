"""The rows of the operation table: every route of the public API, its credentials and answers.

Grouped as the API is: health, sessions, sites and webhooks; avatars and documents; conversations
and usage; custom voices. A row whose route the app does not serve is left out of the document.
"""

from __future__ import annotations

from pydantic import BaseModel

from ...models.session_views import (
    Health,
    Readiness,
    SessionConnected,
    SessionCreated,
    SessionPage,
    SessionView,
    WaitingRoomView,
)
from ...models.sessions import SessionConnect, SessionCreate
from ...models.sites import Site, SiteCreate, SitePage, SitePatch, SiteWithSecret
from ...models.webhooks import WebhookDelivery, WebhookDeliveryPage
from .table import Operation, Param, register

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
        from ...models.avatars import Avatar, AvatarCreate, AvatarPatch
        from ...models.documents import Document, DocumentCreate, DocumentPatch, DocumentSummary
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
    from ...models.conversations import Conversation, ConversationDeleted, ConversationPage, Usage

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
    from ...models.voices import (
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
