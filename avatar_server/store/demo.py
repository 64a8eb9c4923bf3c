"""Which site is the server's own demo site: one id in Redis, claimed once (``SET NX``)
so several instances starting at once agree on one site."""

from __future__ import annotations

from . import keys
from .connection import Redis

# KEYS: demo_site; ARGV: expected old id ("" = none), new id → the id recorded afterwards
_SWAP = """
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return cur
"""


class DemoSiteRef:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._swap = redis.register_script(_SWAP)

    async def get(self) -> str | None:
        value = await self.r.get(keys.demo_site())
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def claim(self, site_id: str, *, replacing: str | None) -> str:
        """Record ``site_id`` if the recorded id is still ``replacing`` (None: nothing recorded);
        returns the id recorded afterwards — another instance's, if it was quicker."""
        value = await self._swap(keys=[keys.demo_site()], args=[replacing or "", site_id])
        return value.decode() if isinstance(value, bytes) else str(value)

    async def forget(self) -> None:
        await self.r.delete(keys.demo_site())
