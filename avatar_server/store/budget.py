"""The upstream request budget in Redis: a sliding window shared by every instance.

Each request sent upstream is one member of a sorted set scored by Redis's own clock, so
instances with skewed clocks still share one window. The window is 1.2 s long, not 1 s: the
upstream counts arrivals, and a request leaves a little after it took its token. A request
that waited for a connection longer than ``upstream.transport.TOKEN_FRESH`` (0.15 s) takes a
fresh token before it leaves, so a budget of N per 1.2 s keeps every second *as the upstream
sees it* at N or fewer, with 50 ms to spare for a busy event loop. A class of request may take tokens
only while the window holds fewer than ``limit - reserve`` members: status reads keep
clear of the last fifth of the budget, creates of the last tenth, consumes of the last
twentieth, and cancels may take every token — cancels before consumes before creates
before status reads, whatever the mix.
"""

from __future__ import annotations

from . import keys
from .connection import Redis

WINDOW_MS = 1200

# KEYS: window; ARGV: limit, reserve, wanted, window ms → {granted, ms until the oldest leaves, used}
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local room = tonumber(ARGV[1]) - tonumber(ARGV[2]) - used
local n = math.min(tonumber(ARGV[3]), room)
if n > 0 then
  local seq = redis.call('INCRBY', KEYS[1] .. ':seq', n)
  for i = 1, n do redis.call('ZADD', KEYS[1], now, seq - n + i) end
  redis.call('PEXPIRE', KEYS[1], window * 2)
  redis.call('PEXPIRE', KEYS[1] .. ':seq', 86400000)
  used = used + n
else
  n = 0
end
local wait = 0
if n < tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then wait = tonumber(oldest[2]) + window - now else wait = 1 end
end
return {n, wait, used}
"""


class BudgetStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._take = redis.register_script(_TAKE)

    async def take(self, limit: int, reserve: int, wanted: int) -> tuple[int, float, int]:
        """Take up to ``wanted`` tokens. Returns (granted, seconds until one may free, used now)."""
        granted, wait_ms, used = await self._take(keys=[keys.upstream_budget()], args=[limit, reserve, wanted, WINDOW_MS])
        return int(granted), max(0.001, int(wait_ms) / 1000), int(used)
