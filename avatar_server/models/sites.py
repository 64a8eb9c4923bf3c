"""Site models: where a site may embed avatars from, which avatars, how many at once.

A site is the unit of embedding: a browser on one of its ``allowedOrigins`` starts
sessions with the site's ``publishableKey`` (``pk_…``), for one of its ``avatarIds``,
while fewer than ``maxConcurrentSessions`` of its sessions are not ENDED. No I/O here.

Origins are normalised the way browsers send them in the ``Origin`` header:
lower-case scheme and host, no default port, no path, no trailing slash.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from avatar_server.models.avatars import SESSION_PRESETS
from avatar_server.models.common import NoControls, RequestBody, ResponseModel, Timestamp
from avatar_server.models.sessions import Tool
from avatar_server.runway import is_uuid4

NAME_MAX = 100
ORIGINS_MAX = 50
AVATAR_IDS_MAX = 100
CONCURRENCY_MAX = 1000
ORIGIN_MAX_LEN = 253 + 16

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]{2,45}\]$")
_ORIGIN = re.compile(r"^(?P<scheme>https?)://(?P<host>\[[^\]/]*\]|[^:/?#@\[\]]+)(?::(?P<port>\d{1,5}))?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    pass


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` in the browser's form, or ``OriginError`` saying what is wrong.

    Refused: ``null``, other schemes, user info, paths (even ``/``), queries, fragments,
    wildcards, non-ASCII hosts (use the punycode form), ports out of range."""
    if not isinstance(value, str):
        raise OriginError("an origin is a string like https://www.example.com")
    raw = value.strip()
    if raw.lower() == "null":
        raise OriginError("the 'null' origin (sandboxed frames, file: pages) cannot be allowed")
    if len(raw) > ORIGIN_MAX_LEN:
        raise OriginError("the origin is too long")
    if "*" in raw:
        raise OriginError("wildcards are not supported: list each origin")
    m = _ORIGIN.match(raw.lower())
    if m is None:
        raise OriginError(
            "an origin is scheme://host[:port] with scheme http or https and no path, e.g. https://www.example.com"
        )
    scheme, host, port = m.group("scheme"), m.group("host"), m.group("port")
    if not (_HOSTNAME.match(host) or _IPV4.match(host) or _IPV6.match(host)):
        raise OriginError("the origin's host is not a valid host name or IP address (use punycode for IDNs)")
    if port is not None:
        number = int(port)
        if not 0 < number <= 65535:
            raise OriginError("the origin's port must be between 1 and 65535")
        if number == _DEFAULT_PORTS[scheme]:
            port = None
        else:
            port = str(number)
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def origin_or_none(value: str | None) -> str | None:
    """The normalised form of a request's ``Origin`` header, or None if absent or not valid."""
    if not value:
        return None
    try:
        return normalize_origin(value)
    except OriginError:
        return None


def _origin(value: str) -> str:
    try:
        return normalize_origin(value)
    except OriginError as exc:
        raise ValueError(str(exc)) from None


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def normalize_avatar_id(value: str) -> str:
    """A custom avatar id (a UUID, lower-cased) or a preset id (``cooking-teacher``)."""
    v = value.strip()
    if is_uuid4(v):
        return v.lower()
    if v in SESSION_PRESETS:
        return v
    raise ValueError("an avatar id is a custom avatar's UUID or one of the preset ids: "
                     + ", ".join(SESSION_PRESETS))


SiteName = Annotated[str, Field(min_length=1, max_length=NAME_MAX), NoControls]
Origin = Annotated[str, Field(min_length=1, max_length=ORIGIN_MAX_LEN, examples=["https://www.example.com"]),
                   AfterValidator(_origin)]
AvatarId = Annotated[str, Field(min_length=1, max_length=64, examples=["cooking-teacher"]),
                     AfterValidator(normalize_avatar_id)]
AllowedOrigins = Annotated[list[Origin], Field(min_length=1, max_length=ORIGINS_MAX), AfterValidator(_unique)]
AvatarIds = Annotated[list[AvatarId], Field(min_length=1, max_length=AVATAR_IDS_MAX), AfterValidator(_unique)]
# strict: a JSON integer only (not "20", not true, not 20.0)
MaxConcurrent = Annotated[int, Field(ge=1, le=CONCURRENCY_MAX, strict=True)]
SiteMaxDuration = Annotated[int, Field(ge=10, le=300, strict=True)]
# where the site's webhooks go (syntax here; the target rules, which depend on
# AVATAR_SERVER_ALLOW_PRIVATE_TARGETS and DNS, in avatar_server.webhooks.targets)
WebhookUrl = Annotated[str, Field(min_length=8, max_length=2048, examples=["https://api.example.com/hooks/avatar"]),
                       NoControls]
TOOLS_MAX = 20
TOOL_TIMEOUT_DEFAULT = 10.0
TOOL_TIMEOUT_MAX = 30.0


class SiteTool(Tool):
    """One of Runway's tool objects (``client_event`` or ``backend_rpc``), validated as Runway does, plus
    our own fields for a ``backend_rpc`` tool: ``url`` (the site's backend: https, a public domain name —
    the webhook target rules, checked by ``avatar_server.webhooks.targets``) and ``timeoutSeconds``.
    Neither goes upstream or to a browser."""

    url: Annotated[str, Field(min_length=8, max_length=2048, examples=["https://api.example.com/avatar/tools"]),
                   NoControls] | None = Field(None, description="backend_rpc only (required there): where the "
                                              "server POSTs {sessionId, siteId, tool, args}, signed like webhooks")
    timeoutSeconds: Annotated[float, Field(gt=0, le=TOOL_TIMEOUT_MAX)] | None = Field(
        None, description=f"backend_rpc only: how long the server waits for the site's backend (default "
        f"{TOOL_TIMEOUT_DEFAULT:g} s, at most {TOOL_TIMEOUT_MAX:g} s)")

    @model_validator(mode="after")
    def _backend_fields(self) -> SiteTool:
        if self.type == "backend_rpc":
            if self.url is None:
                raise ValueError("a backend_rpc tool needs a url (the site's backend)")
            if self.timeoutSeconds is None:
                self.timeoutSeconds = TOOL_TIMEOUT_DEFAULT
        elif self.url is not None or self.timeoutSeconds is not None:
            raise ValueError("url and timeoutSeconds are for backend_rpc tools only")
        return self

    def upstream(self) -> dict[str, Any]:
        """The tool as Runway takes it (without our fields)."""
        return self.model_dump(exclude={"url", "timeoutSeconds"})


def _unique_tools(tools: list[SiteTool]) -> list[SiteTool]:
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ValueError("tool names must be unique")
    return tools


SiteTools = Annotated[list[SiteTool], Field(max_length=TOOLS_MAX), AfterValidator(_unique_tools)]


class SiteCreate(RequestBody):
    """Body of ``POST /v1/sites``."""

    name: SiteName
    allowedOrigins: AllowedOrigins
    avatarIds: AvatarIds
    maxConcurrentSessions: MaxConcurrent
    maxDuration: SiteMaxDuration | None = None
    webhookUrl: WebhookUrl | None = None
    tools: SiteTools = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name may not be blank")
        return v.strip()


class SitePatch(RequestBody):
    """Body of ``PATCH /v1/sites/{id}``: any subset; ``maxDuration: null`` removes the site's own limit,
    ``webhookUrl: null`` stops its webhooks; ``tools`` replaces the whole list (``[]`` removes them)."""

    name: SiteName | None = None
    allowedOrigins: AllowedOrigins | None = None
    avatarIds: AvatarIds | None = None
    maxConcurrentSessions: MaxConcurrent | None = None
    maxDuration: SiteMaxDuration | None = None
    webhookUrl: WebhookUrl | None = None
    tools: SiteTools | None = None

    @field_validator("name", "allowedOrigins", "avatarIds", "maxConcurrentSessions", "tools", mode="before")
    @classmethod
    def _no_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("may not be null")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("name may not be blank")
        return v.strip() if v is not None else None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class Site(ResponseModel):
    """A site as admins see it (the publishable key included; only admins ever read a site)."""

    id: str
    name: str
    allowedOrigins: list[str]
    avatarIds: list[str]
    maxConcurrentSessions: int
    maxDuration: int | None = None
    publishableKey: str
    activeSessions: int = Field(0, description="sessions of this site not yet ENDED")
    createdAt: Timestamp
    updatedAt: Timestamp
    keyRotatedAt: Timestamp | None = None
    webhookUrl: str | None = Field(None, description="where session.started/session.ended (and "
                                   "conversation.ready) are POSTed, signed with the site's webhook secret")
    tools: list[SiteTool] = Field([], description="the tools of every session started with the site's key "
                                  "(Runway's tool objects; a backend_rpc tool's url and timeoutSeconds stay here)")

    def allows_avatar(self, avatar_id: str) -> bool:
        try:
            return normalize_avatar_id(avatar_id) in self.avatarIds
        except ValueError:
            return False


WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = 24  # Standard Webhooks: whsec_ + base64 of random bytes (192 bits)


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret (``SiteWithSecret.webhookSecret``): ``whsec_`` + base64 of
    24 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


class SiteWithSecret(Site):
    """A site with its webhook signing secret: the answer of ``POST /v1/sites`` and of
    ``POST /v1/sites/{id}/rotate-webhook-secret`` only (never shown again; rotate it if lost)."""

    webhookSecret: str = Field(description="whsec_ + base64: the Standard Webhooks signing secret")


class SitePage(ResponseModel):
    """One page of ``GET /v1/sites``."""

    data: list[Site]
    hasMore: bool
    nextCursor: str | None = None
