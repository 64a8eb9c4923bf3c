"""The webhook outbox in Redis: durable, shared by every instance, each delivery attempted by one
instance at a time.

    webhooks:outbox                stream, consumer group ``deliverers``: ``{id, site}`` per delivery
                                   due now; acknowledged and deleted when an attempt is recorded
    webhooks:retries               sorted set: delivery id → when its next attempt is due
    webhooks:delivery:<id>         JSON: the delivery (body, status, attempts, last error), 7 days
    site:<id>:webhook-deliveries   sorted set: the site's latest delivery ids (creation ms), trimmed

A delivery is written and put in the stream in one transaction, so once ``enqueue`` returns a
restart loses nothing. An instance reads entries with ``XREADGROUP`` (they are then *pending* for
it); recording an attempt acknowledges and deletes the entry in the same transaction that stores
the outcome (and, for a retry, schedules it in ``webhooks:retries``). An entry whose instance died
before that stays pending and is taken over with ``XAUTOCLAIM`` once it has been idle longer than
any attempt can take. Due retries are moved back into the stream by one Lua script, so each is
attempted once per due time.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.exceptions import ResponseError

from . import keys
from .connection import Redis

GROUP = "deliverers"
RETENTION = 7 * 24 * 3600  # s: a delivery record is kept this long after its last change
KEEP_PER_SITE = 100  # the latest deliveries listed per site

# KEYS: retries, outbox, retry sites; ARGV: now, limit → how many due retries went back into the stream
_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local site = redis.call('HGET', KEYS[3], id)
  redis.call('XADD', KEYS[2], '*', 'id', id, 'site', site or '')
  redis.call('HDEL', KEYS[3], id)
end
return #ids
"""

# KEYS: delivery, retries, outbox, retry sites; ARGV: id, retryUntil, now, retention → the delivery
# (JSON) or nil.
# Pending and waiting for a retry: due now. Pending in the stream: as it is. Delivered or failed:
# pending again (same id and body), due now, with a fresh retry window.
_REDELIVER = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local d = cjson.decode(raw)
if d.status == 'pending' then
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[4], ARGV[1])
    redis.call('XADD', KEYS[3], '*', 'id', ARGV[1], 'site', d.siteId)
  end
  return raw
end
d.status = 'pending'
d.retryUntil = tonumber(ARGV[2])
d.nextAttemptAt = tonumber(ARGV[3])
d.redeliveries = (tonumber(d.redeliveries) or 0) + 1
local out = cjson.encode(d)
redis.call('SET', KEYS[1], out, 'EX', tonumber(ARGV[4]))
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1], 'site', d.siteId)
return out
"""


class OutboxStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._due = redis.register_script(_DUE)
        self._redeliver = redis.register_script(_REDELIVER)

    async def ensure_group(self) -> None:
        try:
            await self.r.xgroup_create(keys.webhook_outbox(), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- writing ------------------------------------------------------------------------
    async def enqueue(self, delivery: dict[str, Any]) -> None:
        """Store a new delivery and make it due now (one transaction)."""
        did, site = delivery["id"], delivery["siteId"]
        index = keys.site_webhook_deliveries(site)
        async with self.r.pipeline(transaction=True) as p:
            p.set(keys.webhook_delivery(did), json.dumps(delivery), ex=RETENTION)
            p.zadd(index, {did: int(delivery["createdAt"] * 1000)})
            p.zremrangebyrank(index, 0, -KEEP_PER_SITE - 1)
            p.xadd(keys.webhook_outbox(), {"id": did, "site": site})
            await p.execute()

    async def record(self, entry: str, delivery: dict[str, Any], *, retry_at: float | None = None) -> None:
        """Store an attempt's outcome and let go of the stream entry; ``retry_at``: attempt again then."""
        async with self.r.pipeline(transaction=True) as p:
            p.set(keys.webhook_delivery(delivery["id"]), json.dumps(delivery), ex=RETENTION)
            if retry_at is not None:
                p.zadd(keys.webhook_retries(), {delivery["id"]: retry_at})
                p.hset(keys.webhook_retry_sites(), delivery["id"], delivery["siteId"])
            p.xack(keys.webhook_outbox(), GROUP, entry)
            p.xdel(keys.webhook_outbox(), entry)
            await p.execute()

    async def defer(self, entry: str, delivery_id: str, site_id: str, due: float) -> None:
        """Put an entry back for later without an attempt (its site has enough in flight here)."""
        async with self.r.pipeline(transaction=True) as p:
            p.zadd(keys.webhook_retries(), {delivery_id: due})
            p.hset(keys.webhook_retry_sites(), delivery_id, site_id)
            p.xack(keys.webhook_outbox(), GROUP, entry)
            p.xdel(keys.webhook_outbox(), entry)
            await p.execute()

    async def drop(self, entry: str) -> None:
        """Let go of an entry whose delivery is gone or already settled."""
        async with self.r.pipeline(transaction=True) as p:
            p.xack(keys.webhook_outbox(), GROUP, entry)
            p.xdel(keys.webhook_outbox(), entry)
            await p.execute()

    async def redeliver(self, delivery_id: str, retry_for: float) -> dict[str, Any] | None:
        now = time.time()
        raw = await self._redeliver(
            keys=[keys.webhook_delivery(delivery_id), keys.webhook_retries(), keys.webhook_outbox(),
                  keys.webhook_retry_sites()],
            args=[delivery_id, now + retry_for, now, RETENTION],
        )
        return json.loads(raw) if raw else None

    # --- reading ------------------------------------------------------------------------
    async def move_due(self, now: float, limit: int = 200) -> int:
        return int(await self._due(keys=[keys.webhook_retries(), keys.webhook_outbox(), keys.webhook_retry_sites()],
                                   args=[now, limit]))

    async def read(self, consumer: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """New entries for ``consumer`` (they are pending for it until recorded)."""
        try:
            rows = await self.r.xreadgroup(GROUP, consumer, {keys.webhook_outbox(): ">"}, count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # the stream was removed (e.g. a flushed Redis)
            return []
        return [(entry, fields) for _, entries in rows or [] for entry, fields in entries]

    async def claim_stale(self, consumer: str, min_idle: float, count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries pending longer than ``min_idle`` seconds (their instance died mid-attempt), now ours."""
        try:
            result = await self.r.xautoclaim(keys.webhook_outbox(), GROUP, consumer, int(min_idle * 1000),
                                             start_id="0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [(entry, fields) for entry, fields in result[1] if fields]

    async def get(self, delivery_id: str) -> dict[str, Any] | None:
        raw = await self.r.get(keys.webhook_delivery(delivery_id))
        return json.loads(raw) if raw else None

    async def for_site(self, site_id: str, limit: int) -> list[dict[str, Any]]:
        """The site's latest deliveries, newest first."""
        ids = await self.r.zrevrange(keys.site_webhook_deliveries(site_id), 0, limit - 1)
        if not ids:
            return []
        rows = await self.r.mget([keys.webhook_delivery(i) for i in ids])
        return [json.loads(r) for r in rows if r]

    async def backlog(self) -> tuple[int, int]:
        """(entries due or in flight, deliveries waiting for a retry), all instances together."""
        async with self.r.pipeline(transaction=False) as p:
            p.xlen(keys.webhook_outbox())
            p.zcard(keys.webhook_retries())
            due, waiting = await p.execute()
        return int(due), int(waiting)
