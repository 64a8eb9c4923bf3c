"""Settings: one typed object read from the environment and checked at start.

A bad value raises ``ConfigError`` with one line naming the variable; ``__main__``
prints it and exits 1. Nothing is read from the environment anywhere else.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .ice import parse_ice_servers

DEFAULT_RUNWAY_BASE_URL = "https://api.dev.runwayml.com"
MAX_CAP_SECONDS = 300
MIN_CAP_SECONDS = 10


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range: it must be between {lo} and {hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range: it must be between {lo} and {hi}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} must be on or off (1/0, true/false, yes/no)")


def _url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip()
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"{name}={raw!r} is not a valid URL (expected {' or '.join(schemes)}://host...)")
    return raw.rstrip("/")


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = (env.get(name) or "").strip()
    out = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _ice_servers(text: str) -> list[dict[str, Any]]:
    """``AVATAR_ENGINE_ICE_SERVERS``: the engine's peer uses it, and the server hands the same list
    to browsers with ``webrtc`` credentials (one parser for both: ``ice``)."""
    try:
        return parse_ice_servers(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    admin_token: str | None = None
    data_dir: Path = Path(".avatar-server")
    redis_url: str | None = None
    runway_secret: str | None = field(default=None, repr=False)
    runway_base_url: str = DEFAULT_RUNWAY_BASE_URL
    cap_seconds: int = MAX_CAP_SECONDS
    # Lifecycle deadlines (seconds); tuned for tests through the same env names.
    provision_timeout: float = 90.0
    ready_timeout: float = 60.0
    abandon_grace: float = 15.0
    upstream_check_interval: float = 15.0
    upstream_timeout: float = 15.0
    lease_seconds: float = 15.0
    # Conversations (transcripts) are kept this many days after they end (fractions allowed).
    conversation_retention_days: float = 30.0
    log_level: str = "INFO"
    log_json: bool = False
    # Browser starts (publishable keys): per client address, fixed one-minute windows; 0 disables.
    start_rate_per_minute: int = 10
    # Proxies whose X-Forwarded-For is believed (addresses or CIDR networks); empty: none.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # The /demo page and its site for the server's own origin (from_env: on in engine mode).
    demo: bool = False
    # A connection must finish its request headers (and an idle keep-alive connection send its
    # next request) within idle_timeout; a request body must arrive within body_timeout.
    idle_timeout: float = 15.0
    body_timeout: float = 30.0
    # ICE servers a browser uses for ``webrtc`` credentials (the local engine's transport); the same
    # AVATAR_ENGINE_ICE_SERVERS list the engine's peer uses. Empty: host candidates only.
    ice_servers: tuple[dict[str, Any], ...] = ()
    # Load (docs/architecture.md, "The waiting room and the request budget"): the most upstream
    # sessions alive at once (0: unknown, learned from the upstream's queued answers), the
    # most upstream requests per second (all instances together), the most starts waiting.
    upstream_concurrency: int = 0
    upstream_max_rps: int = 50
    waiting_room_size: int = 1000
    # off: no slots are counted and nothing waits (every start goes straight upstream)
    waiting_room: bool = True
    # This instance refuses starts (503 server_busy) while its event loop lags more than this.
    overload_lag: float = 0.5
    # GET /metrics also opens with this bearer token (a scraper's credential); None: admin token only.
    metrics_token: str | None = field(default=None, repr=False)
    # Development and tests only: webhook (and tool) URLs may be http:// and loopback/private hosts.
    allow_private_targets: bool = False
    # Webhook deliveries: each attempt's total deadline; the first retry's delay (doubling, ≤ 1 h).
    webhook_timeout: float = 10.0
    webhook_retry_seconds: float = 5.0

    @property
    def engine_mode(self) -> bool:
        """True when no Runway secret is set: the embedded local engine is the upstream."""
        return not self.runway_secret

    def base_url(self, bound_port: int | None = None) -> str:
        if self.public_url:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{bound_port or self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        secret = (env.get("RUNWAYML_API_SECRET") or "").strip() or None
        token = (env.get("AVATAR_SERVER_ADMIN_TOKEN") or "").strip() or None
        if token is not None and len(token) < 16:
            raise ConfigError("AVATAR_SERVER_ADMIN_TOKEN is too short: use at least 16 characters")
        level = (env.get("AVATAR_SERVER_LOG_LEVEL") or "INFO").strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"AVATAR_SERVER_LOG_LEVEL={level!r} must be DEBUG, INFO, WARNING or ERROR")
        return cls(
            host=(env.get("AVATAR_SERVER_HOST") or "127.0.0.1").strip(),
            port=_int(env, "AVATAR_SERVER_PORT", 8080, 0, 65535),
            public_url=_url(env, "AVATAR_SERVER_PUBLIC_URL", None, ("http", "https")),
            admin_token=token,
            data_dir=Path(env.get("AVATAR_SERVER_DATA_DIR") or ".avatar-server"),
            redis_url=_url(env, "REDIS_URL", None, ("redis", "rediss", "unix")),
            runway_secret=secret,
            runway_base_url=_url(env, "RUNWAYML_BASE_URL", DEFAULT_RUNWAY_BASE_URL, ("http", "https"))
            or DEFAULT_RUNWAY_BASE_URL,
            cap_seconds=_int(env, "AVATAR_SERVER_SESSION_CAP_SECONDS", MAX_CAP_SECONDS, MIN_CAP_SECONDS, MAX_CAP_SECONDS),
            provision_timeout=_float(env, "AVATAR_SERVER_PROVISION_TIMEOUT_SECONDS", 90.0, 1.0, 3600.0),
            ready_timeout=_float(env, "AVATAR_SERVER_READY_TIMEOUT_SECONDS", 60.0, 1.0, 3600.0),
            abandon_grace=_float(env, "AVATAR_SERVER_ABANDON_GRACE_SECONDS", 15.0, 0.5, 600.0),
            upstream_check_interval=_float(env, "AVATAR_SERVER_UPSTREAM_CHECK_SECONDS", 15.0, 0.5, 600.0),
            upstream_timeout=_float(env, "AVATAR_SERVER_UPSTREAM_TIMEOUT_SECONDS", 15.0, 0.2, 120.0),
            lease_seconds=_float(env, "AVATAR_SERVER_LEASE_SECONDS", 15.0, 1.0, 300.0),
            conversation_retention_days=_float(env, "AVATAR_SERVER_CONVERSATION_RETENTION_DAYS", 30.0,
                                               0.0001, 3650.0),
            log_level=level,
            log_json=(env.get("AVATAR_SERVER_LOG_FORMAT") or "").strip().lower() == "json",
            start_rate_per_minute=_int(env, "AVATAR_SERVER_START_RATE_PER_MINUTE", 10, 0, 1_000_000),
            trusted_proxies=_networks(env, "AVATAR_SERVER_TRUSTED_PROXIES"),
            idle_timeout=_float(env, "AVATAR_SERVER_IDLE_TIMEOUT_SECONDS", 15.0, 1.0, 3600.0),
            body_timeout=_float(env, "AVATAR_SERVER_BODY_TIMEOUT_SECONDS", 30.0, 1.0, 600.0),
            ice_servers=tuple(_ice_servers(env["AVATAR_ENGINE_ICE_SERVERS"]))
            if env.get("AVATAR_ENGINE_ICE_SERVERS") else (),
            demo=_bool(env, "AVATAR_SERVER_DEMO", default=secret is None),
            upstream_concurrency=_int(env, "AVATAR_SERVER_UPSTREAM_CONCURRENCY", 0, 0, 100_000),
            upstream_max_rps=_int(env, "AVATAR_SERVER_UPSTREAM_MAX_RPS", 50, 1, 100_000),
            waiting_room_size=_int(env, "AVATAR_SERVER_WAITING_ROOM_SIZE", 1000, 0, 1_000_000),
            waiting_room=_bool(env, "AVATAR_SERVER_WAITING_ROOM", default=True),
            overload_lag=_float(env, "AVATAR_SERVER_OVERLOAD_LAG_SECONDS", 0.5, 0.05, 60.0),
            metrics_token=_metrics_token(env),
            allow_private_targets=_bool(env, "AVATAR_SERVER_ALLOW_PRIVATE_TARGETS", default=False),
            webhook_timeout=_float(env, "AVATAR_SERVER_WEBHOOK_TIMEOUT_SECONDS", 10.0, 1.0, 60.0),
            webhook_retry_seconds=_float(env, "AVATAR_SERVER_WEBHOOK_RETRY_SECONDS", 5.0, 0.1, 3600.0),
        )


def _metrics_token(env: Mapping[str, str]) -> str | None:
    token = (env.get("AVATAR_SERVER_METRICS_TOKEN") or "").strip() or None
    if token is not None and (len(token) < 16 or not (token.isascii() and token.isprintable()) or " " in token):
        raise ConfigError("AVATAR_SERVER_METRICS_TOKEN must be at least 16 printable ASCII characters, no spaces")
    return token


def load_or_create_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token: from settings, else from ``<data_dir>/admin-token``, else generated there.

    Returns ``(token, generated)``; ``generated`` is True only the first time, so the caller
    prints it once.
    """
    if settings.admin_token:
        return settings.admin_token, False
    path = settings.data_dir / "admin-token"
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    except OSError as exc:
        raise ConfigError(f"AVATAR_SERVER_DATA_DIR={settings.data_dir}: cannot read {path.name}: {exc}") from None
    if existing:
        return existing, False
    token = "adm_" + secrets.token_urlsafe(32)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
    except FileExistsError:
        return path.read_text().strip(), False
    except OSError as exc:
        raise ConfigError(f"AVATAR_SERVER_DATA_DIR={settings.data_dir} is not writable: {exc}") from None
    return token, True
