"""The waiting room and the upstream slots in Redis, shared by every instance.

Slots: ``room_alive`` holds the ids of the sessions that hold an upstream slot (their create
is about to leave, is in flight, or created a session not yet known terminal). While it
holds ``limit`` members (the configured ``AVATAR_SERVER_UPSTREAM_CONCURRENCY``, else the
limit learned from the upstream's ``queued`` answers), further starts wait. ``room_running`` marks
the holders the upstream has answered as running (not queued); the learned limit counts only them.

The room is start-time fair queuing: each lane (a site, or ``admin``) has a tag; an arrival
gets ``max(clock, lane tag)`` as its score and moves the lane's tag one past it, and the
room serves the lowest score (ties in arrival order, by the zero-padded sequence number
that begins the member). Lanes with someone waiting are served in turn, first come first
served within a lane, and a lane that was idle joins the current round.

Every change is one Lua script; the session record's ``inRoom`` flag moves with it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from . import keys
from .connection import Redis

# A slot is free when fewer than ``limit`` hold one. With no limit known yet and a probe window
# (learning), when the holders not yet answered as running are fewer than the window: ``probe``,
# or a quarter of those running if more (it grows with the upstream's proven capacity, as TCP's
# slow start does). So the first ``queued`` answer comes while only that many starts have gone
# upstream unconfirmed, and those are all the upstream may queue beyond its limit.
_FREE = """
local function free(alive_key, running_key, limit, probe)
  local alive = redis.call('ZCARD', alive_key)
  if limit > 0 then return alive < limit end
  if probe > 0 then
    local running = redis.call('SCARD', running_key)
    return alive - running < math.max(probe, math.floor(running / 4))
  end
  return true
end
"""

# KEYS: order, members, lane tags, clock, seq, alive, learned limit, running
# ARGV: session id, lane, configured limit (0: learned or none), room size, now, probe window
#   → {1} go (slot taken), {0, position} waiting, {2, waiting} room full
_ENTER = _FREE + """
local limit = tonumber(ARGV[3])
if limit == 0 then limit = tonumber(redis.call('GET', KEYS[7]) or '0') end
local waiting = redis.call('ZCARD', KEYS[1])
if waiting == 0 and free(KEYS[6], KEYS[8], limit, tonumber(ARGV[6])) then
  redis.call('ZADD', KEYS[6], ARGV[5], ARGV[1])
  return {1, 0}
end
if waiting >= tonumber(ARGV[4]) then return {2, waiting} end
local clock = tonumber(redis.call('GET', KEYS[4]) or '0')
local tag = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
local start = math.max(clock, tag)
redis.call('HSET', KEYS[3], ARGV[2], start + 1)
local seq = redis.call('INCR', KEYS[5])
local member = string.format('%012d', seq) .. ':' .. ARGV[2] .. ':' .. ARGV[1]
redis.call('ZADD', KEYS[1], start, member)
redis.call('HSET', KEYS[2], ARGV[1], member)
return {0, redis.call('ZRANK', KEYS[1], member) + 1}
"""

# KEYS: order, members, clock, alive, learned limit, grants, shown, running
# ARGV: configured limit, now, max grants, session record key template ("?" = id), probe window
#   → ids granted a slot (their record's inRoom set false)
_GRANT = _FREE + """
local limit = tonumber(ARGV[1])
if limit == 0 then limit = tonumber(redis.call('GET', KEYS[5]) or '0') end
local out = {}
while #out < tonumber(ARGV[3]) do
  if not free(KEYS[4], KEYS[8], limit, tonumber(ARGV[5])) then break end
  local head = redis.call('ZPOPMIN', KEYS[1])
  if not head[1] then break end
  local member = head[1]
  local sid = string.match(member, ':([^:]+)$')
  redis.call('HDEL', KEYS[2], sid)
  redis.call('HDEL', KEYS[7], sid)
  redis.call('SET', KEYS[3], head[2])
  redis.call('ZADD', KEYS[4], ARGV[2], sid)
  redis.call('LPUSH', KEYS[6], ARGV[2])
  local rec = string.gsub(ARGV[4], '%?', sid)
  if redis.call('EXISTS', rec) == 1 then redis.call('HSET', rec, 'inRoom', 'false', 'queued', 'false') end
  out[#out + 1] = sid
end
redis.call('LTRIM', KEYS[6], 0, 49)
return out
"""

# KEYS: order, members, shown; ARGV: session id → 1 if it was waiting
_LEAVE = """
local member = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if not member then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], member)
return 1
"""

# KEYS: alive, running; ARGV: session id → 1 if marked (it holds a slot), else 0
_RUNNING = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: alive, learned limit, running; ARGV: ttl (s), the queued id → the limit now in force
# A ``queued`` answer means the upstream is full. The slot holders it has answered as running its
# own slot (the ``running`` set), less the one just queued, are a lower bound of its limit: each
# of them was seen holding an upstream slot, while a holder whose create is still on its way, or
# that no poll has answered yet, is not counted. So a later queued answer may only raise the
# limit (towards the true one, as more holders are seen running), never lower it; the limit
# expires after ``ttl`` (tiers change) and is learned again.
_LEARN = """
local n = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if sid ~= ARGV[2] and redis.call('SISMEMBER', KEYS[3], sid) == 1 then n = n + 1 end
end
local limit = math.max(1, n, tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('SET', KEYS[2], limit, 'EX', tonumber(ARGV[1]))
return limit
"""

# KEYS: order, members, shown; ARGV: session id → {live rank + 1 or 0, position shown}
# The position shown never rises: a newly active lane's visitor may be served in between,
# then the number holds until it is true again.
_POSITION = """
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return {0, 0} end
local pos = redis.call('ZRANK', KEYS[1], member) + 1
local shown = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if shown == 0 or pos < shown then shown = pos; redis.call('HSET', KEYS[3], ARGV[1], pos) end
return {pos, shown}
"""

LEARNED_TTL = 600  # s: a learned limit is re-learned after this long (tiers change)


@dataclass(frozen=True)
class Entered:
    go: bool
    full: bool = False
    position: int = 0
    waiting: int = 0


@dataclass(frozen=True)
class RoomSnapshot:
    waiting: int
    by_lane: dict[str, int]
    alive: int
    limit: int  # in force: configured, learned, or 0 (none known)
    learned: bool
    recent_grants: list[float]


class RoomStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._enter = redis.register_script(_ENTER)
        self._grant = redis.register_script(_GRANT)
        self._leave = redis.register_script(_LEAVE)
        self._learn = redis.register_script(_LEARN)
        self._running = redis.register_script(_RUNNING)
        self._position = redis.register_script(_POSITION)

    async def enter(self, session_id: str, lane: str, *, limit: int, size: int, probe: int = 0) -> Entered:
        """Take a slot or a place in line. ``probe``: with no limit known, at most this many holders
        not yet answered as running (0: no such bound)."""
        code, n = await self._enter(
            keys=[keys.room_order(), keys.room_members(), keys.room_lane_tags(), keys.room_clock(),
                  keys.room_seq(), keys.room_alive(), keys.room_learned_limit(), keys.room_running()],
            args=[session_id, lane, limit, size, time.time(), probe],
        )
        if code == 1:
            return Entered(go=True)
        if code == 2:
            return Entered(go=False, full=True, waiting=int(n))
        return Entered(go=False, position=int(n))

    async def grant(self, *, limit: int, most: int = 100, probe: int = 0) -> list[str]:
        """Serve waiting starts while slots are free; returns the ids now holding a slot."""
        return list(await self._grant(
            keys=[keys.room_order(), keys.room_members(), keys.room_clock(), keys.room_alive(),
                  keys.room_learned_limit(), keys.room_grants(), keys.room_shown(), keys.room_running()],
            args=[limit, time.time(), most, keys.session("?"), probe],
        ))

    async def leave(self, session_id: str) -> bool:
        """Take a waiting start out of the room (it ended). True if it was waiting."""
        return bool(await self._leave(keys=[keys.room_order(), keys.room_members(), keys.room_shown()],
                                      args=[session_id]))

    async def release(self, session_id: str) -> bool:
        """Give back the session's upstream slot (its upstream session is terminal or never was)."""
        async with self.r.pipeline(transaction=True) as p:
            p.zrem(keys.room_alive(), session_id)
            p.srem(keys.room_running(), session_id)
            removed, _ = await p.execute()
        return bool(removed)

    async def running(self, session_id: str) -> bool:
        """The upstream answered ``session_id`` as holding one of its slots (not queued). False if it
        holds no slot of ours (it ended meanwhile): nothing is marked."""
        return bool(await self._running(keys=[keys.room_alive(), keys.room_running()], args=[session_id]))

    async def learn_limit(self, queued_id: str) -> int:
        """The upstream queued ``queued_id``: learn its concurrency from the sessions it runs now."""
        return int(await self._learn(keys=[keys.room_alive(), keys.room_learned_limit(), keys.room_running()],
                                     args=[LEARNED_TTL, queued_id]))

    async def position(self, session_id: str) -> tuple[int, int]:
        """(live position, position shown) of a waiting start; (0, 0) if it is not waiting."""
        pos, shown = await self._position(keys=[keys.room_order(), keys.room_members(), keys.room_shown()],
                                          args=[session_id])
        return int(pos), int(shown)

    async def waiting_ids(self) -> list[str]:
        """Waiting starts in the order they will be served (the room holds at most its size)."""
        members = await self.r.zrange(keys.room_order(), 0, -1)
        return [m.rsplit(":", 1)[1] for m in members]

    async def alive_since(self) -> list[tuple[str, float]]:
        """(session id, when it took its slot) of every slot held."""
        return [(m, float(t)) for m, t in await self.r.zrange(keys.room_alive(), 0, -1, withscores=True)]

    async def snapshot(self, configured_limit: int) -> RoomSnapshot:
        async with self.r.pipeline(transaction=False) as p:
            p.zrange(keys.room_order(), 0, -1)
            p.zcard(keys.room_alive())
            p.get(keys.room_learned_limit())
            p.lrange(keys.room_grants(), 0, -1)
            members, alive, learned, grants = await p.execute()
        by_lane: dict[str, int] = {}
        for m in members:
            lane = m.split(":")[1]
            by_lane[lane] = by_lane.get(lane, 0) + 1
        limit = configured_limit or int(learned or 0)
        return RoomSnapshot(
            waiting=len(members), by_lane=by_lane, alive=int(alive), limit=limit,
            learned=not configured_limit and learned is not None,
            recent_grants=[float(g) for g in grants],
        )

    async def shown_positions(self, session_ids: list[str]) -> dict[str, int]:
        if not session_ids:
            return {}
        rows = await self.r.hmget(keys.room_shown(), session_ids)
        return {sid: int(v) for sid, v in zip(session_ids, rows, strict=True) if v}

    async def set_shown(self, positions: dict[str, int]) -> None:
        if positions:
            await self.r.hset(keys.room_shown(), mapping={k: json.dumps(v) for k, v in positions.items()})
