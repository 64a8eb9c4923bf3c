"""Hardening at the edge: security headers on every response, request body limits per
route, and the client's address (for per-visitor limits) behind trusted proxies only.

Security headers come from ``HEADER_POLICIES``, a small table keyed by path prefix (the
longest matching prefix wins). Pages that need something else add a row with
``register_header_policy`` — or set the header themselves: a header a handler already
set is never overwritten.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..appkeys import SETTINGS
from ..errors import PayloadTooLarge

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_BODY_LIMIT = 64 * 1024
AVATAR_BODY_LIMIT = 6 * 1024 * 1024  # a 5 MB data-URI image plus the rest of the avatar
DOCUMENT_BODY_LIMIT = 3 * 1024 * 1024  # 200,000 characters of content, even as JSON \uXXXX escapes
# (path prefix, limit, the field that makes a body that large: named in the 413)
BODY_LIMITS: list[tuple[str, int, str | None]] = [
    ("/v1/avatars", AVATAR_BODY_LIMIT, "referenceImage"),
    ("/v1/documents", DOCUMENT_BODY_LIMIT, "content"),
    # the embedded engine (engine mode) receives what the server forwards
    ("/engine/v1/avatars", AVATAR_BODY_LIMIT, "referenceImage"),
    ("/engine/v1/documents", DOCUMENT_BODY_LIMIT, "content"),
]

_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "connect-src 'self' ws: wss: https:; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_CSP = _PAGE_CSP  # public: a page handler that sets its own CSP starts from it (api/pages.py)
_API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


@dataclass(frozen=True)
class HeaderPolicy:
    """Headers for responses under one path prefix. ``None`` leaves a header out."""

    frame_options: str | None = "DENY"
    csp: str | None = _API_CSP
    referrer_policy: str = "no-referrer"
    cache_control: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        out = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": self.referrer_policy}
        if self.frame_options:
            out["X-Frame-Options"] = self.frame_options
        if self.csp:
            out["Content-Security-Policy"] = self.csp
        if self.cache_control:
            out["Cache-Control"] = self.cache_control
        out.update(self.extra)
        return out


HEADER_POLICIES: dict[str, HeaderPolicy] = {
    # JSON API: nothing to render, nothing to frame, nothing to cache (tokens live here)
    "/": HeaderPolicy(),
    "/v1/": HeaderPolicy(cache_control="no-store"),
    # HTML pages served by us: our own scripts only, never framed
    "/demo": HeaderPolicy(csp=_PAGE_CSP, referrer_policy="strict-origin-when-cross-origin"),
    "/admin": HeaderPolicy(csp=_PAGE_CSP, cache_control="no-store"),
    # the embed script is loaded by other sites: readable cross-origin, no page policy
    "/widget.js": HeaderPolicy(frame_options=None, csp=None, referrer_policy="strict-origin-when-cross-origin",
                               extra={"Cross-Origin-Resource-Policy": "cross-origin"}),
}


def register_header_policy(prefix: str, policy: HeaderPolicy) -> None:
    HEADER_POLICIES[prefix] = policy


def policy_for(path: str) -> HeaderPolicy:
    best = ""
    for prefix in HEADER_POLICIES:
        if path.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return HEADER_POLICIES[best or "/"]


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, WebSocket upgrades and errors included."""
    for name, value in policy_for(request.path).headers().items():
        response.headers.setdefault(name, value)


def body_limit_for(path: str) -> tuple[int, str | None]:
    """The body limit of ``path``, and the field that makes a body that large (None: any)."""
    for prefix, limit, big_field in BODY_LIMITS:
        if path.startswith(prefix):
            return limit, big_field
    return DEFAULT_BODY_LIMIT, None


def too_large(path: str) -> PayloadTooLarge:
    limit, field = body_limit_for(path)
    if field is None:
        return PayloadTooLarge(f"the request body is too large (limit {limit} bytes)", limit=limit)
    return PayloadTooLarge(f"the request body is too large (limit {limit} bytes): {field} is too long",
                           field=field, limit=limit)


@web.middleware
async def body_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 in our error shape: at once from ``Content-Length``, or while reading a chunked body."""
    limit, _ = body_limit_for(request.path)
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(request.path)
    if limit != request.client_max_size:
        request = request.clone(client_max_size=limit)
    return await handler(request)


def client_address(request: web.Request) -> str:
    """The visitor's address: the peer, or — only when the peer is a trusted proxy — the
    right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    candidate = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a forged or garbled entry: stop at the last address we could vouch for
        candidate = hop
        if not _in(hop, trusted):
            break
    return candidate


def visitor_bucket(address: str) -> str:
    """The rate-limit bucket of a visitor's address: an IPv4 address as it is, an IPv6 address by
    its /64 (one subscriber's network: a visitor holds billions of addresses in it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
