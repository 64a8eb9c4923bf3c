"""Who may start a session, and the admission of browser starts.

``authenticate_starter`` runs before the body is read: the admin token, or a publishable
key whose request comes from one of its site's ``allowedOrigins`` and is within the
per-visitor rate limit. ``start`` then creates the session: for a site, only for one of
its ``avatarIds``, with the site's ``maxDuration`` as a ceiling, and only if the site has
fewer than ``maxConcurrentSessions`` sessions not ENDED — decided by one Lua script in
Redis (``SiteStore.admit``) run by the session service just before it stores the record.
A failure after admission gives the slot back, so nothing is half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from ..appkeys import RATE_LIMITER, SESSIONS, SETTINGS, SITES
from ..errors import Forbidden, LimitExceeded, ValidationFailed
from ..models.avatars import SESSION_PRESETS
from ..models.sessions import SessionCreate, SessionRecord
from ..models.sites import Site, origin_or_none
from .auth import Principal, bearer, require_admin, site_for_key
from .cors import scope_to_site
from .security import client_address, visitor_bucket

log = logging.getLogger("avatar_server.admission")

RATE_WINDOW = 60.0
DEFAULT_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Starter:
    principal: Principal
    site: Site | None = None
    origin: str | None = None


async def authenticate_starter(request: web.Request) -> Starter:
    token = bearer(request)
    if token is None or not token.startswith("pk_"):
        return Starter(require_admin(request))
    principal, site = await site_for_key(request, token)
    scope_to_site(request, site.id)
    raw = request.headers.get("Origin")
    if not raw:
        raise Forbidden("a publishable key works only from a browser page on one of the site's origins "
                        "(the request has no Origin)", code="origin_not_allowed")
    origin = origin_or_none(raw)
    if origin is None or origin not in site.allowedOrigins:
        raise Forbidden("this origin is not allowed for this site", code="origin_not_allowed")
    await _rate_limit(request)
    return Starter(principal, site, origin)


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


async def start(request: web.Request, starter: Starter, req: SessionCreate) -> tuple[SessionRecord, str]:
    svc = request.app[SESSIONS]
    avatar = req.avatar
    if avatar.type == "runway-preset" and avatar.presetId not in SESSION_PRESETS:
        # refused here, before any upstream call (upstream would answer 400, which is our 502)
        field = "avatarId" if request.path.endswith("/connect") else "avatar.presetId"
        raise ValidationFailed(f"{field}: not a preset avatar; expected a custom avatar id or one of "
                               f"{', '.join(SESSION_PRESETS)}", field=field)
    site = starter.site
    if site is None:
        return await svc.create(req)
    avatar_id = avatar.avatarId if avatar.type == "custom" else avatar.presetId
    if not site.allows_avatar(avatar_id):
        raise Forbidden("this avatar is not available on this site", code="avatar_not_allowed")
    sites = request.app[SITES]
    admitted: list[str] = []

    async def admit(session_id: str) -> None:
        ok, active = await sites.admit(site.id, session_id, site.maxConcurrentSessions)
        if not ok:
            raise LimitExceeded(
                f"this site already has {active} sessions running; its limit is {site.maxConcurrentSessions}",
                code="concurrency_limit", retry_after=await _retry_after(request, site),
                limit=site.maxConcurrentSessions, active=active,
            )
        admitted.append(session_id)

    try:
        return await svc.create(req, site_id=site.id, origin=starter.origin,
                                max_duration_ceiling=site.maxDuration, admit=admit)
    except BaseException:
        for sid in admitted:
            with contextlib.suppress(Exception):
                await asyncio.shield(sites.release_unstored(site.id, sid))
        raise


async def _retry_after(request: web.Request, site: Site) -> float:
    """When a slot is likely to free up: the earliest end of the site's running sessions."""
    with contextlib.suppress(Exception):
        ids = await request.app[SITES].active_ids(site.id)
        records = await request.app[SESSIONS].store.get_many(ids[:200])
        ends = [r.endsAt for r in records if r.endsAt is not None]
        if ends:
            return max(1.0, min(ends) - time.time())
    return DEFAULT_RETRY_AFTER
