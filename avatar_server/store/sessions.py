"""Sessions in Redis: the record (a hash of JSON values), its indexes, its timers (named by
``sessions.timer_names``), its credentials and client token. Every multi-key change is one
Lua script, so a status change, its index moves and its timer changes happen together or not
at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..models.sessions import Credentials, SessionRecord, SessionStatus
from . import keys
from .connection import Redis
from .lua import SET_IF_EXISTS

# KEYS: session, active, ended, timers, [site_active]
# ARGV: allowed_csv, new_status, now_ms, nfields, (field, json)*, nremove, member*, nadd, (member, score)*
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {0, ''} end
cur = cjson.decode(cur)
local allowed = ',' .. ARGV[1] .. ','
if not string.find(allowed, ',' .. cur .. ',', 1, true) then return {0, cur} end
local i = 4
local nf = tonumber(ARGV[i]); i = i + 1
redis.call('HSET', KEYS[1], 'status', cjson.encode(ARGV[2]))
for _ = 1, nf do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
local nr = tonumber(ARGV[i]); i = i + 1
for _ = 1, nr do redis.call('ZREM', KEYS[4], ARGV[i]); i = i + 1 end
local na = tonumber(ARGV[i]); i = i + 1
for _ = 1, na do redis.call('ZADD', KEYS[4], ARGV[i + 1], ARGV[i]); i = i + 2 end
if ARGV[2] == 'ENDED' then
  local id = redis.call('HGET', KEYS[1], 'id')
  id = cjson.decode(id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], ARGV[3], id)
  if KEYS[5] then redis.call('SREM', KEYS[5], id) end
end
return {1, cur}
"""

# KEYS: timers; ARGV: now, lease_seconds, limit → members claimed (their score pushed to now+lease)
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], until_, m) end
return due
"""

# KEYS: timers; ARGV: member, expected_score_floor → remove only if not re-armed since it was claimed
_DONE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) >= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
"""


# KEYS: lease keys; ARGV: owner, ttl ms → per key 1 if held by owner now (renewed, or taken again
# after it lapsed while nobody else took it), else 0 (another instance holds it)
_RENEW_LEASES = """
local out = {}
for i, k in ipairs(KEYS) do
  local holder = redis.call('GET', k)
  if holder == ARGV[1] or not holder then
    redis.call('SET', k, ARGV[1], 'PX', tonumber(ARGV[2]))
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


# KEYS: lease keys; ARGV: owner → deletes those still held by owner
_RELEASE_LEASES = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 0
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in fields.items()}


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in raw.items()}


class TransitionRefused(Exception):
    def __init__(self, current: SessionStatus | None) -> None:
        super().__init__(f"transition refused from {current}")
        self.current = current


class SessionStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._transition = redis.register_script(_TRANSITION)
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._done = redis.register_script(_DONE)
        self._set_if_exists = redis.register_script(SET_IF_EXISTS)
        self._renew_leases = redis.register_script(_RENEW_LEASES)
        self._release_leases = redis.register_script(_RELEASE_LEASES)

    # --- records -----------------------------------------------------------------
    async def create(
        self,
        record: SessionRecord,
        client_token: str,
        *,
        timers: Iterable[tuple[str, float]] = (),
        ttl_token: int = 24 * 3600,
    ) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.hset(keys.session(record.id), mapping=_encode(record.model_dump(mode="json")))
            p.zadd(keys.sessions_active(), {record.id: int(record.createdAt * 1000)})
            p.set(keys.client_token(token_hash(client_token)), record.id, ex=ttl_token)
            for member, at in timers:
                p.zadd(keys.timers(), {member: at})
            if record.siteId:
                p.sadd(keys.site_active(record.siteId), record.id)
            await p.execute()

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self.r.hgetall(keys.session(session_id))
        if not raw:
            return None
        return SessionRecord.model_validate(_decode(raw))

    async def get_many(self, ids: Sequence[str]) -> list[SessionRecord]:
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.hgetall(keys.session(i))
            rows = await p.execute()
        return [SessionRecord.model_validate(_decode(r)) for r in rows if r]

    async def ends_of(self, ids: Sequence[str]) -> list[float | None]:
        """``endsAt`` of each session (None: not running, or gone), in one round trip."""
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.hget(keys.session(i), "endsAt")
            rows = await p.execute()
        return [json.loads(r) if r else None for r in rows]

    async def set_fields(self, session_id: str, fields: dict[str, Any]) -> bool:
        """Update fields other than the status (``queued``, ``upstreamId`` ...) of an existing record."""
        if "status" in fields:
            raise ValueError("use transition() to change the status")
        args: list[str] = []
        for k, v in _encode(fields).items():
            args += [k, v]
        return bool(await self._set_if_exists(keys=[keys.session(session_id)], args=args)) if args else False

    async def transition(
        self,
        record: SessionRecord,
        allowed: Iterable[SessionStatus],
        new: SessionStatus,
        fields: dict[str, Any] | None = None,
        *,
        remove_timers: Iterable[str] = (),
        add_timers: Iterable[tuple[str, float]] = (),
    ) -> SessionStatus:
        """Atomically move ``record`` to ``new`` if its current status is in ``allowed``.

        Returns the previous status; raises ``TransitionRefused`` with the current one."""
        fields = dict(fields or {})
        argv: list[Any] = [",".join(s.value for s in allowed), new.value, int(time.time() * 1000)]
        enc = _encode(fields)
        argv.append(len(enc))
        for k, v in enc.items():
            argv += [k, v]
        rem = list(remove_timers)
        argv.append(len(rem))
        argv += rem
        add = list(add_timers)
        argv.append(len(add))
        for member, at in add:
            argv += [member, at]
        ks = [keys.session(record.id), keys.sessions_active(), keys.sessions_ended(), keys.timers()]
        if record.siteId:
            ks.append(keys.site_active(record.siteId))
        ok, cur = await self._transition(keys=ks, args=argv)
        if not ok:
            raise TransitionRefused(SessionStatus(cur) if cur else None)
        return SessionStatus(cur)

    async def session_for_client_token(self, token: str) -> str | None:
        return await self.r.get(keys.client_token(token_hash(token)))

    async def list(self, *, active: bool, limit: int, cursor: float | None) -> tuple[list[SessionRecord], float | None]:
        """Newest first; ``cursor`` is the score to continue below (exclusive)."""
        key = keys.sessions_active() if active else keys.sessions_ended()
        hi = f"({cursor}" if cursor is not None else "+inf"
        rows = await self.r.zrevrangebyscore(key, hi, "-inf", start=0, num=limit + 1, withscores=True)
        more = len(rows) > limit
        rows = rows[:limit]
        records = await self.get_many([m for m, _ in rows])
        next_cursor = rows[-1][1] if more and rows else None
        return records, next_cursor

    async def active_ids(self) -> list[str]:
        return list(await self.r.zrange(keys.sessions_active(), 0, -1))

    # --- credentials, consume-once, leases ----------------------------------------
    async def claim_consume(self, session_id: str) -> bool:
        return bool(await self.r.set(keys.session_consume_lock(session_id), "1", nx=True, ex=7 * 24 * 3600))

    async def put_credentials(self, session_id: str, creds: Credentials, ttl: float) -> None:
        await self.r.set(keys.session_credentials(session_id), creds.model_dump_json(), ex=max(1, int(ttl)))

    async def get_credentials(self, session_id: str) -> Credentials | None:
        raw = await self.r.get(keys.session_credentials(session_id))
        return Credentials.model_validate_json(raw) if raw else None

    async def drop_credentials(self, session_id: str) -> None:
        await self.r.delete(keys.session_credentials(session_id))

    async def take_lease(self, session_id: str, owner: str, ttl: float) -> bool:
        return bool(await self.r.set(keys.session_lease(session_id), owner, nx=True, px=int(ttl * 1000)))

    async def renew_leases(self, session_ids: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """Renew many leases in one call (one that lapsed unclaimed is taken again); False where
        another instance holds it now."""
        out: list[bool] = []
        for i in range(0, len(session_ids), 500):
            chunk = session_ids[i:i + 500]
            held = await self._renew_leases(keys=[keys.session_lease(s) for s in chunk],
                                            args=[owner, int(ttl * 1000)])
            out += [bool(h) for h in held]
        return out

    async def release_leases(self, session_ids: Sequence[str], owner: str) -> None:
        """Give back the leases ``owner`` still holds (a clean shutdown: others resume at once)."""
        for i in range(0, len(session_ids), 500):
            chunk = session_ids[i:i + 500]
            await self._release_leases(keys=[keys.session_lease(s) for s in chunk], args=[owner])

    async def release_lease(self, session_id: str, owner: str) -> None:
        key = keys.session_lease(session_id)
        if await self.r.get(key) == owner:
            await self.r.delete(key)

    # --- timers --------------------------------------------------------------------
    async def add_timer(self, member: str, at: float) -> None:
        await self.r.zadd(keys.timers(), {member: at})

    async def remove_timers(self, *members: str) -> None:
        if members:
            await self.r.zrem(keys.timers(), *members)

    async def claim_due_timers(self, now: float, lease: float, limit: int = 100) -> list[str]:
        return list(await self._claim_due(keys=[keys.timers()], args=[now, lease, limit]))

    async def finish_timer(self, member: str, claimed_until: float) -> None:
        await self._done(keys=[keys.timers()], args=[member, claimed_until])

    # --- learned provisioning time ----------------------------------------------------
    async def add_provision_sample(self, seconds: float, keep: int = 200) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.lpush(keys.provision_samples(), f"{seconds:.3f}")
            p.ltrim(keys.provision_samples(), 0, keep - 1)
            await p.execute()

    async def provision_samples(self) -> list[float]:
        return [float(x) for x in await self.r.lrange(keys.provision_samples(), 0, -1)]
