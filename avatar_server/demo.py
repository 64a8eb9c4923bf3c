"""The demo site: what makes ``/demo`` work on a fresh run with no configuration.

At start (``AVATAR_SERVER_DEMO``, on by default in engine mode, off in Runway mode) the
server makes sure one site exists for its own origin — the public URL's, plus the
loopback spellings when it listens on loopback without a public URL — allowing the preset
avatars, a few sessions at a time. Its id is kept in Redis (``DemoSiteRef``), so restarts
and several instances sharing a Redis reuse one site. Admins may edit it like any site
(avatars, limits, ``rotate-key``); a restart only adds the server's origin back if it is
missing. Turning the demo off deletes the demo site, so its publishable key stops working.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from .models.avatars import SESSION_PRESETS
from .models.sites import ORIGINS_MAX, Site, SiteCreate, normalize_origin
from .settings import Settings
from .store.demo import DemoSiteRef
from .store.sites import SiteStore

log = logging.getLogger("avatar_server.demo")

DEMO_SITE_NAME = "Demo page of this server (/demo)"
# engine mode costs only CPU (~15–20 % of a core per stream, docs/media.md); Runway mode bills
DEMO_MAX_SESSIONS_ENGINE = 3
DEMO_MAX_SESSIONS_RUNWAY = 2
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def demo_origins(settings: Settings) -> list[str]:
    """The origins browsers use to open this server's pages."""
    parts = urlsplit(settings.base_url())
    origins = [normalize_origin(f"{parts.scheme}://{parts.netloc}")]
    if not settings.public_url and (settings.host in ("0.0.0.0", "::", "") or parts.hostname in
                                    ("127.0.0.1", "localhost", "::1")):
        port = f":{parts.port}" if parts.port else ""
        for host in _LOOPBACK:
            origin = normalize_origin(f"{parts.scheme}://{host}{port}")
            if origin not in origins:
                origins.append(origin)
    return origins


def preset_name(avatar_id: str) -> str:
    """``cooking-teacher`` → ``Cooking teacher`` (custom avatar ids are shown as they are)."""
    if avatar_id not in SESSION_PRESETS:
        return avatar_id
    return avatar_id.replace("-", " ").capitalize()


async def ensure_demo_site(settings: Settings, sites: SiteStore, ref: DemoSiteRef) -> Site | None:
    """Create (or find) the demo site when the demo is on; delete it when it is off."""
    current_id = await ref.get()
    if not settings.demo:
        if current_id is not None:
            await sites.delete(current_id)
            await ref.forget()
            log.info("demo turned off: the demo site was deleted", extra={"siteId": current_id})
        return None
    origins = demo_origins(settings)
    site = await sites.get(current_id) if current_id else None
    if site is None:
        body = SiteCreate(
            name=DEMO_SITE_NAME,
            allowedOrigins=origins,
            avatarIds=list(SESSION_PRESETS),
            maxConcurrentSessions=DEMO_MAX_SESSIONS_ENGINE if settings.engine_mode else DEMO_MAX_SESSIONS_RUNWAY,
        )
        created = await sites.create(body.model_dump())
        winner = await ref.claim(created.id, replacing=current_id)
        if winner != created.id:  # another instance was quicker: use its site
            await sites.delete(created.id)
            site = await sites.get(winner)
            if site is None:
                log.warning("the demo site of another instance vanished; /demo is unavailable until restart")
                return None
        else:
            site = created
            log.info("created the demo site for /demo", extra={"siteId": site.id})
    missing = [o for o in origins if o not in site.allowedOrigins]
    if missing:
        changed = await sites.update(site.id, {"allowedOrigins": (site.allowedOrigins + missing)[:ORIGINS_MAX]})
        site = changed or site
    return site


async def demo_site(sites: SiteStore, ref: DemoSiteRef) -> Site | None:
    """The demo site as it is now (its key may have been rotated), or None."""
    site_id = await ref.get()
    return await sites.get(site_id) if site_id else None
