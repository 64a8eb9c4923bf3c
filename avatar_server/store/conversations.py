"""Conversations and the usage ledger in Redis (``conversations`` package is the only user).

* A conversation is one JSON string per finished session that reached RUNNING, with a TTL (the
  retention), and one member in a few sorted-set indexes scored by ``startedAt`` (ms): all, its
  site (or ``admin``), its avatar. An index member whose record expired is skipped when read and
  removed then; members older than the retention are trimmed on every write.
* Fetching the upstream's transcript is durable: ``convs:pending`` holds the ids still to fetch,
  scored by the next attempt; a claim pushes the score ahead (as timers do), so exactly one
  instance fetches each, and one whose instance died comes due again.
* The usage ledger is one hash per UTC day, ``<site>|<avatar>|<metric>`` → count (``*`` = any),
  written once per conversation in the same script that stores it (so never counted twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from . import keys
from .connection import Redis

LEDGER_TTL_SECONDS = 400 * 86_400  # usage is kept well past a year of reports

# KEYS: record, pending, ledger day, index keys...; ARGV: json, ttl ms, score ms, id, due, ledger ttl s,
# then the number of ledger fields n, then n (field, increment) pairs
_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) == false then return 0 end
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4]) end
if tonumber(ARGV[5]) >= 0 then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4]) end
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[3], ARGV[8 + 2 * i], ARGV[9 + 2 * i])
end
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1
"""

# KEYS: pending; ARGV: now, limit, hold seconds → claimed ids (their score pushed to now + hold)
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), id) end
return ids
"""

# KEYS: record, pending, attempts; ARGV: id, now, max backoff → attempts so far (0: the record is
# gone, dropped); the next try is due after 2^(attempts-1) seconds, at most the max backoff
_RETRY = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 0
end
local attempts = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local delay = math.min(tonumber(ARGV[3]), 2 ^ (attempts - 1))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + delay, ARGV[1])
return attempts
"""


def index_scopes(conv: dict[str, Any]) -> list[str]:
    """The indexes a conversation is listed in."""
    scopes = ["all", f"site:{conv['siteId']}" if conv.get("siteId") else "admin"]
    avatar = avatar_key(conv.get("avatar"))
    if avatar:
        scopes.append(f"avatar:{avatar}")
    return scopes


def avatar_key(avatar: Any) -> str | None:
    """A preset's id or a custom avatar's id (what ``avatarId`` filters on)."""
    if not isinstance(avatar, dict):
        return None
    value = avatar.get("presetId") or avatar.get("avatarId") or avatar.get("id")
    return str(value).lower() if value else None


class ConversationStore:
    def __init__(self, redis: Redis) -> None:
        self._r = redis
        self._record = redis.register_script(_RECORD)
        self._claim = redis.register_script(_CLAIM)
        self._retry = redis.register_script(_RETRY)

    # -- conversations -------------------------------------------------------------------------

    async def record(self, conv: dict[str, Any], *, ttl_seconds: float, score_ms: int, due: float,
                     day: str, ledger: dict[str, int]) -> bool:
        """Store a new conversation, index it, queue its upstream fetch and count it in the day's
        ledger, at once; False (nothing changed) if it was recorded before."""
        conv_id = conv["id"]
        scope_keys = [keys.conversations_index(s) for s in index_scopes(conv)]
        args: list[Any] = [json.dumps(conv, separators=(",", ":")), max(1, int(ttl_seconds * 1000)), score_ms,
                           conv_id, due, LEDGER_TTL_SECONDS, len(ledger)]
        for name, amount in ledger.items():
            args += [name, amount]
        done = await self._record(keys=[keys.conversation(conv_id), keys.conversations_pending(),
                                        keys.usage_day(day), *scope_keys], args=args)
        return bool(done)

    async def get(self, conv_id: str) -> dict[str, Any] | None:
        raw = await self._r.get(keys.conversation(conv_id))
        return json.loads(raw) if raw else None

    async def ttl_ms(self, conv_id: str) -> int:
        return int(await self._r.pttl(keys.conversation(conv_id)))

    async def update(self, conv: dict[str, Any]) -> bool:
        """Replace a stored conversation, keeping its expiry; False if it is gone (deleted, expired)."""
        done = await self._r.set(keys.conversation(conv["id"]), json.dumps(conv, separators=(",", ":")),
                                 xx=True, keepttl=True)
        return bool(done)

    async def delete(self, conv_id: str) -> dict[str, Any] | None:
        """Erase a conversation and every trace of it (indexes, pending fetch); what it was, or None."""
        conv = await self.get(conv_id)
        if conv is None:
            return None
        async with self._r.pipeline(transaction=True) as p:
            p.delete(keys.conversation(conv_id))
            for scope in index_scopes(conv):
                p.zrem(keys.conversations_index(scope), conv_id)
            p.zrem(keys.conversations_pending(), conv_id)
            p.hdel(keys.conversation_attempts(), conv_id)
            await p.execute()
        return conv

    async def trim(self, scopes: Iterable[str], older_than_ms: int) -> None:
        async with self._r.pipeline(transaction=False) as p:
            for scope in scopes:
                p.zremrangebyscore(keys.conversations_index(scope), "-inf", f"({older_than_ms}")
            await p.execute()

    async def page(self, scope: str, *, limit: int, before: tuple[int, str] | None, min_ms: int | None,
                   max_ms: int | None, admit: Callable[[dict[str, Any]], bool],
                   batch: int = 200) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` conversations of ``scope`` that ``admit`` keeps, newest first, strictly after
        the position ``before`` (``(score, id)`` of the last one shown); and whether more follow."""
        index = keys.conversations_index(scope)
        top: int | float = max_ms if max_ms is not None else float("inf")
        skip_at: tuple[int, str] | None = None
        if before is not None:
            top = min(top, before[0])
            skip_at = before
        bottom: int | float = min_ms if min_ms is not None else float("-inf")
        out: list[dict[str, Any]] = []
        offset = 0
        while len(out) <= limit:
            rows = await self._r.zrevrangebyscore(index, _bound(top), _bound(bottom), start=offset, num=batch,
                                                  withscores=True)
            if not rows:
                break
            offset += len(rows)
            ids: list[str] = []
            for member, score in rows:
                member = member.decode() if isinstance(member, bytes) else member
                if skip_at is not None and int(score) == skip_at[0] and member >= skip_at[1]:
                    continue  # shown already (same millisecond, listed in descending id order)
                ids.append(member)
            if not ids:
                continue
            raws = await self._r.mget([keys.conversation(i) for i in ids])
            gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if gone:
                await self._r.zrem(index, *gone)
                offset -= len(gone)
            for raw in raws:
                if raw is None:
                    continue
                conv = json.loads(raw)
                if admit(conv):
                    out.append(conv)
                    if len(out) > limit:
                        break
            if len(rows) < batch:
                break
        return out[:limit], len(out) > limit

    # -- the upstream fetch queue --------------------------------------------------------------

    async def claim_due(self, now: float, limit: int, hold: float) -> list[str]:
        ids = await self._claim(keys=[keys.conversations_pending()], args=[now, limit, hold])
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def retry(self, conv_id: str, now: float, max_backoff: float) -> int:
        """Count a failed fetch and queue the next after 1, 2, 4 … ``max_backoff`` seconds; the number
        of attempts so far (0: the conversation is gone, and so is its fetch)."""
        return int(await self._retry(keys=[keys.conversation(conv_id), keys.conversations_pending(),
                                           keys.conversation_attempts()], args=[conv_id, now, max_backoff]))

    async def fetched(self, conv_id: str) -> None:
        async with self._r.pipeline(transaction=True) as p:
            p.zrem(keys.conversations_pending(), conv_id)
            p.hdel(keys.conversation_attempts(), conv_id)
            await p.execute()

    # -- usage ---------------------------------------------------------------------------------

    async def usage_days(self, days: list[str]) -> list[dict[str, int]]:
        """The ledger of each day (``{field: count}``, empty for a day with nothing)."""
        async with self._r.pipeline(transaction=False) as p:
            for day in days:
                p.hgetall(keys.usage_day(day))
            raws = await p.execute()
        out = []
        for raw in raws:
            out.append({(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()})
        return out


def _bound(value: int | float) -> str | int:
    if value == float("inf"):
        return "+inf"
    if value == float("-inf"):
        return "-inf"
    return int(value)
