"""The gate every upstream request passes: the deployment's requests-per-second budget.

``RequestBudget.acquire(op)`` waits for a token of the shared budget (``store.budget``);
the operation's class decides how much of the window it may use, so when the budget is
tight a cancel goes before a consume, a consume before a create, and a create before a
status read (``PRIORITY``). Status reads of the provisioning poller are bought in bulk
with ``try_take``: the poll scheduler asks for as many as it would like this tick and
spends what it gets on the sessions most likely to be READY.

The store is passed in as a callable, so this module needs no Redis.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

# lower is more urgent; ops not named here are catalogue calls (avatars, documents): like creates
PRIORITY = {"cancel": 0, "consume": 1, "create": 2, "get": 3, "list_conversations": 3, "check": 4, "ping": 4,
            "get_conversation": 4}  # a finished conversation's transcript waits behind live sessions
DEFAULT_PRIORITY = 2
# share of the per-second budget that each class leaves to the more urgent ones
_RESERVE_SHARE = (0.0, 0.05, 0.10, 0.20, 0.35)
MAX_WAIT_STEP = 0.05  # seconds: a waiter re-asks at least this often

Take = Callable[[int, int, int], Awaitable[tuple[int, float, int]]]


def reserve_for(priority: int, limit: int) -> int:
    """Tokens of a one-second window that ``priority`` may not use (kept for more urgent ops)."""
    if priority <= 0:
        return 0
    share = _RESERVE_SHARE[min(priority, len(_RESERVE_SHARE) - 1)]
    # never reserve the whole budget: every class can always send something
    return min(limit - 1, max(priority, math.ceil(limit * share))) if limit > 1 else 0


class RequestBudget:
    def __init__(self, take: Take, max_rps: int) -> None:
        if max_rps < 1:
            raise ValueError("max_rps must be >= 1")
        self._take = take
        self.max_rps = max_rps
        self.used = 0  # requests in the last second, as last seen (all instances)
        self.waiting = 0  # requests of this instance waiting for a token now
        self.waited = 0  # requests that had to wait, since start
        self._closed = False

    async def acquire(self, op: str) -> None:
        """Wait until ``op`` may send one request."""
        priority = PRIORITY.get(op, DEFAULT_PRIORITY)
        reserve = reserve_for(priority, self.max_rps)
        granted, wait, self.used = await self._take(self.max_rps, reserve, 1)
        if granted:
            return
        self.waiting += 1
        self.waited += 1
        try:
            while not granted:
                if self._closed:
                    raise RuntimeError("the request budget is closed")
                await asyncio.sleep(min(wait, MAX_WAIT_STEP))
                granted, wait, self.used = await self._take(self.max_rps, reserve, 1)
        finally:
            self.waiting -= 1

    async def try_take(self, wanted: int, op: str = "get") -> int:
        """Take up to ``wanted`` tokens for ``op`` now, without waiting; returns how many."""
        if wanted <= 0:
            return 0
        priority = PRIORITY.get(op, DEFAULT_PRIORITY)
        granted, _, self.used = await self._take(self.max_rps, reserve_for(priority, self.max_rps), wanted)
        return granted

    async def used_now(self) -> int:
        """Requests sent upstream in the last second, all instances (takes nothing)."""
        _, _, self.used = await self._take(self.max_rps, self.max_rps, 0)
        return self.used

    def close(self) -> None:
        self._closed = True
