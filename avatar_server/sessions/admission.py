"""Admission: whether a start may begin, and where it waits — decided before anything is stored.

In order, each refusal leaving nothing behind:

1. the instance is not overloaded (``LoadMonitor``), else 503 ``server_busy``;
2. the avatar: a known preset, or a custom avatar that is READY (the catalog's
   ``check_session_avatar``); for a site, one of its ``avatarIds``;
3. the site's ``maxConcurrentSessions`` (one Lua script, ``SiteStore.admit``);
4. the waiting room (``WaitingRoom.enter``): a free upstream slot, a place in line, or —
   the room being full — 503 ``server_busy`` with ``Retry-After``.

A start that passes is stored and provisioned (or waits its turn). Nothing admitted is later
failed for load: a waiting start ends only by its deadline (``queue_timeout``), its client,
or an administrator. A failure after a slot or place was taken gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import AvatarServerError, Forbidden, LimitExceeded, ValidationFailed
from ..models.avatars import SESSION_PRESETS
from ..models.sessions import SessionCreate, SessionRecord
from ..models.sites import Site
from ..store.sites import SiteStore
from .load import LoadMonitor
from .room import ADMIN_LANE
from .service import SessionService

AvatarCheck = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Starter:
    """Who starts: an administrator (no site), or a visitor of ``site`` from ``origin``."""

    site: Site | None = None
    origin: str | None = None


class Admission:
    def __init__(
        self,
        *,
        sessions: SessionService,
        sites: SiteStore,
        load: LoadMonitor,
        avatar_check: AvatarCheck | None = None,
    ) -> None:
        self.sessions = sessions
        self.sites = sites
        self.load = load
        self.avatar_check = avatar_check
        # hears each start's outcome: "admitted", or the refusal's error code (metrics)
        self.outcomes: Callable[[str], None] | None = None

    async def start(self, starter: Starter, req: SessionCreate, *, avatar_field: str = "avatar.presetId",
                    ) -> tuple[SessionRecord, str]:
        """Admit and open a session; returns (record, clientToken)."""
        try:
            opened = await self._start(starter, req, avatar_field)
        except AvatarServerError as exc:
            self._outcome(exc.code)
            raise
        except Exception:
            self._outcome("error")
            raise
        self._outcome("admitted")
        return opened

    def _outcome(self, outcome: str) -> None:
        if self.outcomes is not None:
            with contextlib.suppress(Exception):
                self.outcomes(outcome)

    async def _start(self, starter: Starter, req: SessionCreate, avatar_field: str) -> tuple[SessionRecord, str]:
        self.load.check()
        avatar = req.avatar
        if avatar.type == "runway-preset" and avatar.presetId not in SESSION_PRESETS:
            # refused here, before any upstream call (upstream would answer 400, which is our 502)
            raise ValidationFailed(f"{avatar_field}: not a preset avatar; expected a custom avatar id or one of "
                                   f"{', '.join(SESSION_PRESETS)}", field=avatar_field)
        site = starter.site
        if site is not None:
            avatar_id = avatar.avatarId if avatar.type == "custom" else avatar.presetId
            if not site.allows_avatar(avatar_id):
                raise Forbidden("this avatar is not available on this site", code="avatar_not_allowed")
        svc = self.sessions
        if site is not None and req.tools is not None:
            raise ValidationFailed("tools: a site's sessions get the site's tools (PATCH /v1/sites/{id}); "
                                   "a visitor's start may not set them", field="tools")
        record = svc.new_record(req, site_id=site.id if site else None, origin=starter.origin,
                                max_duration_ceiling=site.maxDuration if site else None)
        if site is not None and site.tools:
            # the site's tools, url and timeoutSeconds included: the record is server-side only
            # (``SessionRecord.public`` leaves tools out; ``upstream_body`` strips our fields)
            record = record.model_copy(update={"tools": [t.model_dump(exclude_none=True) for t in site.tools]})
        if self.avatar_check is not None:
            await self.avatar_check(record.avatar)
        site_slot = False
        room_place = False
        try:
            if site is not None:
                await self._admit_to_site(site, record.id)
                site_slot = True
            entered = await svc.room.enter(record.id, site.id if site else ADMIN_LANE)
            room_place = True
            return await svc.open(record, waiting=not entered.go)
        except BaseException:
            await asyncio.shield(self._give_back(record.id, site if site_slot else None, room_place))
            raise

    async def _admit_to_site(self, site: Site, session_id: str) -> None:
        ok, active = await self.sites.admit(site.id, session_id, site.maxConcurrentSessions)
        if not ok:
            raise LimitExceeded(
                f"this site already has {active} sessions running; its limit is {site.maxConcurrentSessions}",
                code="concurrency_limit", retry_after=await self._site_retry_after(site),
                limit=site.maxConcurrentSessions, active=active,
            )

    async def _give_back(self, session_id: str, site: Site | None, room_place: bool) -> None:
        """Undo admission for a record that was never stored (nothing half-written)."""
        svc = self.sessions
        if await svc.store.get(session_id) is not None:
            return  # stored: it is a session now, ended like any other
        with contextlib.suppress(Exception):
            if room_place:
                await svc.room.leave(session_id)
                await svc.free_slot(session_id)
            if site is not None:
                await self.sites.release_unstored(site.id, session_id)

    async def _site_retry_after(self, site: Site) -> float:
        """When a slot is likely to free up: the earliest end of the site's running sessions."""
        with contextlib.suppress(Exception):
            ids = await self.sites.active_ids(site.id)
            records = await self.sessions.store.get_many(ids[:200])
            ends = [r.endsAt for r in records if r.endsAt is not None]
            if ends:
                return max(1.0, min(ends) - time.time())
        return DEFAULT_RETRY_AFTER
