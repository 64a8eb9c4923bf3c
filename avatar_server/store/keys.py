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


def site_active(site_id: str) -> str:
    """Set: ids of the site's sessions that are not ENDED (concurrency accounting)."""
    return f"{PREFIX}site:{site_id}:active"


def rate(bucket: str) -> str:
    """String counter with a TTL: one fixed rate-limit window of one bucket."""
    return f"{PREFIX}rate:{bucket}"
