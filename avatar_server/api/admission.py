"""Who is starting a session: the admin token, or a site's visitor.

``authenticate_starter`` runs before the body is read: the admin token, or a publishable
key (in ``Authorization`` or, for callers that cannot set a header, as ``?key=pk_…``) whose
request comes from one of its site's ``allowedOrigins`` and is within the per-visitor rate
limit. Whether the start may begin, and where it waits, is the session layer's admission
(``sessions.admission``), which knows nothing of HTTP.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import RATE_LIMITER, SETTINGS
from ..errors import Forbidden, LimitExceeded
from ..models.sites import origin_or_none
from ..sessions.admission import Starter
from .auth import require_admin, site_for_key, starter_credential
from .cors import scope_to_site
from .security import client_address, visitor_bucket

RATE_WINDOW = 60.0


async def authenticate_starter(request: web.Request) -> Starter:
    # the bearer header, or a publishable key in the URL (?key=pk_…) — the same from here on
    token, _in_url = starter_credential(request)
    if token is None or not token.startswith("pk_"):
        require_admin(request)
        return Starter()
    _principal, site = await site_for_key(request, token)
    scope_to_site(request, site.id)
    raw = request.headers.get("Origin")
    if not raw:
        raise Forbidden("a publishable key works only from a browser page on one of the site's origins "
                        "(the request has no Origin)", code="origin_not_allowed")
    origin = origin_or_none(raw)
    if origin is None or origin not in site.allowedOrigins:
        raise Forbidden("this origin is not allowed for this site", code="origin_not_allowed")
    await _rate_limit(request)
    return Starter(site, origin)


async def _rate_limit(request: web.Request) -> None:
    per_minute = request.app[SETTINGS].start_rate_per_minute
    if per_minute <= 0:
        return
    bucket = visitor_bucket(client_address(request))
    decision = await request.app[RATE_LIMITER].hit(f"start:{bucket}", limit=per_minute, window=RATE_WINDOW)
    if not decision.allowed:
        raise LimitExceeded(
            f"too many sessions started from this address; at most {per_minute} per minute",
            code="rate_limited", retry_after=decision.retry_after, limit=per_minute,
        )
