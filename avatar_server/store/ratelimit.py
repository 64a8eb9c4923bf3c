"""Fixed-window rate limits in Redis, shared by every instance.

``hit(bucket, limit, window)`` counts one event in the bucket's current window (one Lua
script: INCR, and the window's expiry on its first event) and says whether it is within
``limit``, plus how long until the window resets (for ``Retry-After``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import keys
from .connection import Redis

# KEYS: counter; ARGV: window ms → {count, ms left}
_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int
    limit: int
    retry_after: float  # seconds until the window resets


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._hit = redis.register_script(_HIT)

    async def hit(self, bucket: str, *, limit: int, window: float) -> RateDecision:
        count, ttl_ms = await self._hit(keys=[keys.rate(bucket)], args=[max(1, int(window * 1000))])
        count = int(count)
        return RateDecision(allowed=count <= limit, count=count, limit=limit, retry_after=max(0.0, int(ttl_ms) / 1000))
