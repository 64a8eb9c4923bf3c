"""Every Redis key avatar_server uses, built by functions. Nothing else spells a key."""

from __future__ import annotations

PREFIX = "as:"


def session(session_id: str) -> str:
    """Hash: the session record, one JSON-encoded value per field."""
    return f"{PREFIX}session:{session_id}"


def session_credentials(session_id: str) -> str:
    """String (JSON): consumed upstream credentials held for the client; deleted when the session ends."""
    return f"{PREFIX}session:{session_id}:credentials"


def session_consume_lock(session_id: str) -> str:
    """String: set once (NX) by whoever consumes the upstream credentials; guarantees one consume."""
    return f"{PREFIX}session:{session_id}:consumed"


def session_lease(session_id: str) -> str:
    """String with TTL: the instance currently provisioning the session (lease; expires if it dies)."""
    return f"{PREFIX}session:{session_id}:lease"


def client_token(token_hash: str) -> str:
    """String: sha256(clientToken) → session id."""
    return f"{PREFIX}clienttoken:{token_hash}"


def sessions_active() -> str:
    """Sorted set: ids of sessions not ENDED, scored by creation time (ms)."""
    return f"{PREFIX}sessions:active"


def sessions_ended() -> str:
    """Sorted set: ids of ENDED sessions, scored by end time (ms)."""
    return f"{PREFIX}sessions:ended"


def timers() -> str:
    """Sorted set: ``<kind>:<session id>[:<arg>]`` scored by due time (epoch seconds)."""
    return f"{PREFIX}timers"


def events_channel(session_id: str) -> str:
    return f"{PREFIX}events:{session_id}"


def events_pattern() -> str:
    return f"{PREFIX}events:*"


def provision_samples() -> str:
    """List: recent upstream provisioning durations (seconds), newest first."""
    return f"{PREFIX}stats:provision"


def site(site_id: str) -> str:
    """String (JSON): the site record, publishable key included."""
    return f"{PREFIX}site:{site_id}"


def sites_index() -> str:
    """Sorted set (all scores 0): ``<createdAt ms, 15 digits>:<site id>``, listed by lex order."""
    return f"{PREFIX}sites"


def site_key(key_hash: str) -> str:
    """String: sha256(publishableKey) → site id."""
    return f"{PREFIX}sitekey:{key_hash}"


def origin_sites(origin: str) -> str:
    """Set: ids of the sites that allow this (normalised) origin — answers CORS preflights."""
    return f"{PREFIX}origin:{origin}"


def session_admission(session_id: str) -> str:
    """String with TTL: a site slot was taken for this session id and its record may not be written
    yet; once it has expired, a slot with no record behind it is an orphan (its instance died
    between admission and create) and the next full admission frees it."""
    return f"{PREFIX}session:{session_id}:admitted"


def site_active(site_id: str) -> str:
    """Set: ids of the site's sessions that are not ENDED (concurrency accounting)."""
    return f"{PREFIX}site:{site_id}:active"


def rate(bucket: str) -> str:
    """String counter with a TTL: one fixed rate-limit window of one bucket."""
    return f"{PREFIX}rate:{bucket}"


def demo_site() -> str:
    """String: id of the site the server created for its own /demo page (set NX: one per Redis)."""
    return f"{PREFIX}demo:site"


# --- load: the upstream request budget and the waiting room (shared by all instances) ---


def upstream_budget() -> str:
    """Sorted set: one member per upstream request sent in the last second, scored by time (ms)."""
    return f"{PREFIX}budget:upstream"


def room_order() -> str:
    """Sorted set: waiting starts, ``<seq, 12 digits>:<lane>:<session id>`` scored by the start tag of
    fair queuing (round-robin between lanes; ties in arrival order)."""
    return f"{PREFIX}room:order"


def room_members() -> str:
    """Hash: session id → its member in ``room_order`` (to leave or rank by id)."""
    return f"{PREFIX}room:members"


def room_lane_tags() -> str:
    """Hash: lane (site id or ``admin``) → the tag its next arrival starts from."""
    return f"{PREFIX}room:lanes"


def room_clock() -> str:
    """String: the virtual time (start tag of the last start served from the room)."""
    return f"{PREFIX}room:clock"


def room_seq() -> str:
    """String counter: arrival order in the room."""
    return f"{PREFIX}room:seq"


def room_shown() -> str:
    """Hash: session id → the position last shown to it (positions shown never rise)."""
    return f"{PREFIX}room:shown"


def room_alive() -> str:
    """Sorted set: session ids holding an upstream slot (created or being created, not yet known
    terminal upstream), scored by when they took it."""
    return f"{PREFIX}room:alive"


def room_running() -> str:
    """Set: the slot holders the upstream has answered as holding one of its own slots (not
    ``queued``: provisioning, READY or RUNNING). Only these count when the limit is learned."""
    return f"{PREFIX}room:running"


def room_learned_limit() -> str:
    """String with TTL: the upstream's concurrency as learned from its first ``queued`` answer."""
    return f"{PREFIX}room:learned-limit"


def room_grants() -> str:
    """List: times (epoch s) of recent starts served from the room, newest first (service rate)."""
    return f"{PREFIX}room:grants"


# --- knowledge: what the server keeps about avatars and documents (they live upstream) ---


def kb_avatar(avatar_id: str) -> str:
    """Hash: ``json`` (the last upstream avatar object seen), ``name``, ``imageUrl``, ``status``, ``member``."""
    return f"{PREFIX}kb:avatar:{avatar_id}"


def kb_avatar_documents(avatar_id: str) -> str:
    """Set: ids of the documents linked to the avatar."""
    return f"{PREFIX}kb:avatar:{avatar_id}:documents"


def kb_avatars_index() -> str:
    """Sorted set (all scores 0): ``<registered ms, 15 digits>:<avatar id>``, listed by lex order."""
    return f"{PREFIX}kb:avatars"


def kb_document(document_id: str) -> str:
    """Hash: ``tokens`` (the server's count), ``name``, ``type``, ``createdAt``, ``updatedAt``, ``member``."""
    return f"{PREFIX}kb:document:{document_id}"


def kb_document_avatars(document_id: str) -> str:
    """Set: ids of the avatars the document is linked to (its ``usedBy``)."""
    return f"{PREFIX}kb:document:{document_id}:avatars"


def kb_documents_index() -> str:
    """Sorted set (all scores 0): ``<registered ms, 15 digits>:<document id>``, listed by lex order."""
    return f"{PREFIX}kb:documents"


def kb_lock() -> str:
    """String with TTL: the holder of the knowledge lock (serialises link/budget changes and their
    upstream calls across instances; expires by itself if its holder dies)."""
    return f"{PREFIX}kb:lock"


ID_PLACEHOLDER = "{id}"
"""Lua scripts that walk links build keys from templates (``kb_document(ID_PLACEHOLDER)``)."""


# (The local engine's avatars and documents, ``as:engine:…``, are the engine's: ``engine/store.py``.)


# --- the create journal: upstream creates that may exist unseen (``store.journal``) ---------------


def create_intents() -> str:
    """Hash: intent id → JSON ``{sessionId, avatar, maxDuration, at, instance, state, ...}``, written
    before a ``POST /v1/realtime_sessions`` leaves and deleted once its answer is stored (or it is
    reconciled); what is left is a create whose result nobody recorded."""
    return f"{PREFIX}journal:creates"


def instance_alive(instance_id: str) -> str:
    """String with TTL: this instance is alive (renewed by its reconciler; expires when it dies)."""
    return f"{PREFIX}instance:{instance_id}:alive"


def reconcile_lock() -> str:
    """String with TTL: the instance reconciling the create journal right now (one at a time)."""
    return f"{PREFIX}journal:lock"


# -- conversations and usage (store.conversations) ---------------------------------------------


def conversation(session_id: str) -> str:
    """String (JSON) with a TTL (the retention): a finished session's conversation, transcript included."""
    return f"{PREFIX}conv:{session_id}"


def conversations_index(scope: str) -> str:
    """Sorted set: conversation ids scored by startedAt (ms). ``scope``: ``all``, ``site:<id>``,
    ``admin`` (no site) or ``avatar:<presetId or avatarId>``."""
    return f"{PREFIX}convs:{scope}"


def conversations_pending() -> str:
    """Sorted set: conversation ids whose upstream transcript is still to fetch, scored by the next
    attempt (epoch seconds; a claim pushes the score ahead, as with timers)."""
    return f"{PREFIX}convs:pending"


def conversation_attempts() -> str:
    """Hash: conversation id → upstream fetches tried so far (while it is pending)."""
    return f"{PREFIX}convs:attempts"


def usage_day(date: str) -> str:
    """Hash: the usage ledger of one UTC day (``YYYY-MM-DD``): ``<site>|<avatar>|<metric>`` → count,
    ``*`` meaning any; metrics ``sessions``, ``seconds``, ``reason:<endReason>``."""
    return f"{PREFIX}usage:{date}"


# --- webhooks: each site's signing secret, the outbox and the deliveries (``store.outbox``) -------


def site_webhook_secret(site_id: str) -> str:
    """String: the site's webhook signing secret (``whsec_…``); kept apart from the site record so
    that no answer built from the record can carry it."""
    return f"{PREFIX}site:{site_id}:webhook-secret"


def webhook_outbox() -> str:
    """Stream (consumer group ``deliverers``): deliveries due now, one entry ``{id, site}`` each;
    acknowledged and deleted once an attempt is recorded."""
    return f"{PREFIX}webhooks:outbox"


def webhook_retries() -> str:
    """Sorted set: delivery ids waiting for their next attempt, scored by its due time (epoch s)."""
    return f"{PREFIX}webhooks:retries"


def webhook_delivery(delivery_id: str) -> str:
    """String (JSON) with a TTL: one delivery (event body, status, attempts, last error)."""
    return f"{PREFIX}webhooks:delivery:{delivery_id}"


def site_webhook_deliveries(site_id: str) -> str:
    """Sorted set: the site's latest delivery ids, scored by creation time (ms); trimmed."""
    return f"{PREFIX}site:{site_id}:webhook-deliveries"


def webhook_retry_sites() -> str:
    """Hash: delivery id → site id, for the deliveries in ``webhook_retries`` (their stream entry
    names the site again when they come due)."""
    return f"{PREFIX}webhooks:retries:site"
