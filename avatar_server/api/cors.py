"""CORS for the browser-facing routes only, and only for origins a site allows.

Browser-facing: ``POST /v1/sessions``, ``POST /v1/sessions/connect``,
``GET``/``DELETE /v1/sessions/{id}`` (those methods only). Everything else (the admin API) gets no CORS
headers at all, so no browser page can read an admin response.

- Preflight (``OPTIONS`` with ``Access-Control-Request-Method``): 204 with the exact
  ``Origin`` echoed when some site allows it (the key's own site when the URL carries a
  publishable key, ``?key=pk_…``); 403 ``origin_not_allowed`` otherwise.
- Responses: ``Access-Control-Allow-Origin: <the exact origin>`` when the origin is
  allowed — by the publishable key's site, or by the session's site for a client token
  (``scope_to_site``), or by any site when the request carries no valid credential (so a
  page can read why it was refused); never for the admin token (``close_to_browsers``) — and always
  ``Vary: Origin``. Never ``*``; no cookies are involved (``Authorization`` bearer only),
  so ``Allow-Credentials`` is never sent.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..appkeys import SITES
from ..errors import Forbidden
from ..models.sites import origin_or_none
from ..store.health import store_failure
from .middlewares import error_response

log = logging.getLogger("avatar_server.cors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SESSION_ID = re.compile(r"^/v1/sessions/(?!connect$)[^/]+$")
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id"
EXPOSE_HEADERS = "Retry-After, X-Request-Id"
MAX_AGE = "600"


@dataclass
class CorsScope:
    """Filled in by authentication: the site whose origins decide (None: any site's)."""

    scoped: bool = False
    site_id: str | None = None
    closed: bool = False  # the admin token: its answers are for no page of any site


SCOPE_KEY = web.RequestKey("cors_scope", CorsScope)


def scope_to_site(request: web.Request, site_id: str | None) -> None:
    scope = request.get(SCOPE_KEY)
    if scope is not None:
        scope.scoped = True
        scope.site_id = site_id


def close_to_browsers(request: web.Request) -> None:
    """The caller is the admin: no site's page may read this answer (the admin console is
    same-origin and needs no CORS)."""
    scope = request.get(SCOPE_KEY)
    if scope is not None:
        scope.closed = True


def browser_methods(path: str) -> tuple[str, ...] | None:
    """The methods a browser may use on ``path``, or None for a route browsers never call."""
    if path in ("/v1/sessions", "/v1/sessions/connect"):
        return ("POST",)
    if _SESSION_ID.match(path):
        return ("GET", "DELETE")
    return None


def _add_vary(resp: web.StreamResponse, *names: str) -> None:
    present = [v.strip() for v in resp.headers.get("Vary", "").split(",") if v.strip()]
    for n in names:
        if n.lower() not in (p.lower() for p in present):
            present.append(n)
    resp.headers["Vary"] = ", ".join(present)


async def origin_allowed(request: web.Request, origin: str | None, scope: CorsScope | None = None) -> bool:
    if origin is None or (scope is not None and scope.closed):
        return False
    sites = request.app[SITES]
    try:
        if scope is not None and scope.scoped and scope.site_id is not None:
            site = await sites.get(scope.site_id)
            return site is not None and origin in site.allowedOrigins
        return bool(await sites.sites_allowing(origin))
    except Exception as exc:
        if store_failure(exc) is None:
            raise
        log.warning("CORS check failed: Redis unavailable", extra={"path": request.path})
        return False


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    methods = browser_methods(request.path)
    if methods is None:
        return await handler(request)
    raw_origin = request.headers.get("Origin")
    origin = origin_or_none(raw_origin)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return await _preflight(request, raw_origin, origin, methods)
    if request.method not in methods:
        return await handler(request)
    scope = CorsScope()
    request[SCOPE_KEY] = scope
    resp = await handler(request)
    _add_vary(resp, "Origin")
    if raw_origin and not resp.prepared and await origin_allowed(request, origin, scope):
        resp.headers["Access-Control-Allow-Origin"] = raw_origin
        resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return resp


async def _key_scope(request: web.Request) -> CorsScope | None:
    """A preflight carries no ``Authorization``, but a publishable key in the URL (``?key=pk_…``,
    Runway's SDKs) names its site: then that site's origins decide, as for the request itself.
    An unknown key (or none) leaves it to any site's origins, so the page can read the 401."""
    key = request.query.get("key", "")
    if not (key.startswith("pk_") and key.isascii() and key.isprintable()):
        return None
    try:
        site = await request.app[SITES].by_publishable_key(key)
    except Exception as exc:
        if store_failure(exc) is None:
            raise
        return None  # origin_allowed then fails closed on the same outage
    return None if site is None else CorsScope(scoped=True, site_id=site.id)


async def _preflight(
    request: web.Request, raw_origin: str | None, origin: str | None, methods: tuple[str, ...]
) -> web.StreamResponse:
    wanted = request.headers.get("Access-Control-Request-Method", "").strip().upper()
    scope = await _key_scope(request) if raw_origin and wanted in methods else None
    if wanted not in methods:
        resp = error_response(Forbidden(f"browsers may only use {', '.join(methods)} here",
                                        code="cors_method_not_allowed"))
    elif not raw_origin or not await origin_allowed(request, origin, scope):
        whose = "the publishable key's site" if scope is not None else "any site"
        resp = error_response(Forbidden(f"this origin is not allowed by {whose}", code="origin_not_allowed"))
    else:
        resp = web.Response(status=204)
        resp.headers["Access-Control-Allow-Origin"] = raw_origin
        resp.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        resp.headers["Access-Control-Max-Age"] = MAX_AGE
    with contextlib.suppress(Exception):
        _add_vary(resp, "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
    return resp
