"""Sites in Redis, and the atomic concurrency admission of their sessions.

    site:<id>              JSON record (publishable key included; admins read it)
    sites                  sorted set, all scores 0, members ``<createdAt ms>:<id>`` (lex order = age)
    sitekey:<sha256(pk)>   → site id (the only way a publishable key is looked up)
    origin:<origin>        set of site ids allowing that origin (CORS preflights)
    site:<id>:active       set of the site's session ids not ENDED
    site:<id>:webhook-secret  the site's webhook signing secret (``whsec_…``; never in the record)

The active set is filled by ``admit`` (one Lua script: SCARD < limit, then SADD) and
emptied by the session store's ENDED transition, so parallel starts on any number of
instances can never put more than ``limit`` sessions in it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import Conflict
from ..models.sites import Site, new_webhook_secret
from . import keys
from .connection import Redis
from .lex_index import index_member, page
from .optimistic import optimistic, watch_json

# KEYS: site_active, session_admission(id); ARGV: session id, limit, admission TTL (s), and the
# session record key and admission key of the id "?" (templates for the other members)
#   → {1, active after} admitted, {0, active} refused.
# At the limit, members with neither a record nor a live admission key are orphans (their
# instance died between admission and create) and are dropped before counting again.
_ADMIT = """
local n = redis.call('SCARD', KEYS[1])
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {1, n} end
if n >= tonumber(ARGV[2]) then
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local rec = string.gsub(ARGV[4], '%?', m)
    local adm = string.gsub(ARGV[5], '%?', m)
    if redis.call('EXISTS', rec) == 0 and redis.call('EXISTS', adm) == 0 then
      redis.call('SREM', KEYS[1], m)
    end
  end
  n = redis.call('SCARD', KEYS[1])
  if n >= tonumber(ARGV[2]) then return {0, n} end
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[3]))
return {1, n + 1}
"""
ADMISSION_TTL = 300  # s: far longer than any create takes; only a dead instance's claim outlives it

# KEYS: site_active, session record; ARGV: session id → 1 if the slot was released
# (only while the session was never stored: a stored one leaves the set when it ENDs)
_RELEASE_UNSTORED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('SREM', KEYS[1], ARGV[1])
"""

KEY_PREFIX = "pk_"
KEY_BYTES = 24  # 192 random bits

# KEYS: site record, its webhook secret; ARGV: the new secret → 1 if the site exists (and it was set)
_SET_SECRET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


def new_publishable_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _busy() -> Conflict:
    return Conflict("the site is being changed concurrently; try again", code="site_busy")


class SiteStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE_UNSTORED)
        self._set_secret = redis.register_script(_SET_SECRET)

    # --- records -------------------------------------------------------------------
    async def create(self, fields: Mapping[str, Any], *, webhook_secret: str | None = None) -> Site:
        """A new site with a new publishable key and webhook secret (``webhook_secret``, or a new one)."""
        now = time.time()
        site_id = str(uuid.uuid4())
        key = new_publishable_key()
        data = {**fields, "id": site_id, "publishableKey": key, "createdAt": now, "updatedAt": now,
                "keyRotatedAt": None}
        async with self.r.pipeline(transaction=True) as p:
            p.set(keys.site(site_id), json.dumps(data))
            p.zadd(keys.sites_index(), {index_member(int(now * 1000), site_id): 0})
            p.set(keys.site_key(key_hash(key)), site_id)
            p.set(keys.site_webhook_secret(site_id), webhook_secret or new_webhook_secret())
            for origin in data["allowedOrigins"]:
                p.sadd(keys.origin_sites(origin), site_id)
            await p.execute()
        return self._site(data, 0)

    async def get(self, site_id: str) -> Site | None:
        async with self.r.pipeline(transaction=False) as p:
            p.get(keys.site(site_id))
            p.scard(keys.site_active(site_id))
            raw, active = await p.execute()
        return self._site(json.loads(raw), active) if raw else None

    async def by_publishable_key(self, key: str) -> Site | None:
        site_id = await self.r.get(keys.site_key(key_hash(key)))
        return await self.get(site_id) if site_id else None

    async def update(self, site_id: str, changes: Mapping[str, Any]) -> Site | None:
        """Apply ``changes`` (a checked PATCH) atomically; the origin index follows. None: no such site."""
        return await self._modify(site_id, lambda data: {**data, **changes})

    async def rotate_key(self, site_id: str) -> Site | None:
        """A new publishable key; the old one stops working in the same transaction."""
        return await self._modify(site_id, lambda data: {**data, "publishableKey": new_publishable_key(),
                                                         "keyRotatedAt": time.time()})

    async def webhook_secret(self, site_id: str) -> str | None:
        """The site's webhook signing secret (None: the site has none, e.g. it predates webhooks)."""
        return await self.r.get(keys.site_webhook_secret(site_id))

    async def rotate_webhook_secret(self, site_id: str, secret: str) -> bool:
        """Replace the webhook secret; the next attempt of every delivery signs with it. False: no site."""
        return bool(await self._set_secret(keys=[keys.site(site_id), keys.site_webhook_secret(site_id)],
                                           args=[secret]))

    async def delete(self, site_id: str) -> bool:
        """Remove the site, its key and its origins. Its running sessions run on to their end."""
        skey = keys.site(site_id)

        async def body(p: Any) -> bool:
            data = await watch_json(p, skey)
            if data is None:
                return False
            p.multi()
            p.delete(skey)
            p.zrem(keys.sites_index(), index_member(int(data["createdAt"] * 1000), site_id))
            p.delete(keys.site_key(key_hash(data["publishableKey"])))
            p.delete(keys.site_webhook_secret(site_id))
            for origin in data["allowedOrigins"]:
                p.srem(keys.origin_sites(origin), site_id)
            await p.execute()
            return True

        return await optimistic(self.r, body, busy=_busy, retries=20)

    async def _modify(self, site_id: str, change: Any) -> Site | None:
        skey = keys.site(site_id)

        async def body(p: Any) -> Site | None:
            old = await watch_json(p, skey)
            if old is None:
                return None
            new = change(old)
            new["updatedAt"] = time.time()
            p.multi()
            p.set(skey, json.dumps(new))
            if new["publishableKey"] != old["publishableKey"]:
                p.delete(keys.site_key(key_hash(old["publishableKey"])))
                p.set(keys.site_key(key_hash(new["publishableKey"])), site_id)
            for origin in set(old["allowedOrigins"]) - set(new["allowedOrigins"]):
                p.srem(keys.origin_sites(origin), site_id)
            for origin in set(new["allowedOrigins"]) - set(old["allowedOrigins"]):
                p.sadd(keys.origin_sites(origin), site_id)
            p.scard(keys.site_active(site_id))
            results = await p.execute()
            return self._site(new, results[-1])

        return await optimistic(self.r, body, busy=_busy, retries=20)

    async def list(self, *, limit: int, cursor: str | None) -> tuple[list[Site], str | None]:
        """Oldest first; ``cursor`` is the opaque ``nextCursor`` of the previous page."""
        ids, next_cursor = await page(self.r, keys.sites_index(), limit, cursor)
        if not ids:
            return [], None
        async with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.get(keys.site(i))
                p.scard(keys.site_active(i))
            rows = await p.execute()
        sites = [self._site(json.loads(raw), active) for raw, active in zip(rows[::2], rows[1::2], strict=True)
                 if raw]
        return sites, next_cursor

    async def sites_allowing(self, origin: str) -> set[str]:
        return set(await self.r.smembers(keys.origin_sites(origin)))

    # --- concurrency ------------------------------------------------------------------
    async def admit(self, site_id: str, session_id: str, limit: int) -> tuple[bool, int]:
        """Atomically add ``session_id`` to the site's active set if it holds fewer than ``limit``.

        Returns (admitted, active count)."""
        ok, active = await self._admit(
            keys=[keys.site_active(site_id), keys.session_admission(session_id)],
            args=[session_id, limit, ADMISSION_TTL, keys.session("?"), keys.session_admission("?")],
        )
        return bool(ok), int(active)

    async def release_unstored(self, site_id: str, session_id: str) -> bool:
        """Give back a slot taken by ``admit`` for a session whose record was never written."""
        return bool(await self._release(keys=[keys.site_active(site_id), keys.session(session_id)],
                                        args=[session_id]))

    async def active_ids(self, site_id: str) -> list[str]:
        return list(await self.r.smembers(keys.site_active(site_id)))

    @staticmethod
    def _site(data: dict[str, Any], active: int) -> Site:
        return Site.model_validate({**data, "activeSessions": int(active or 0)})
