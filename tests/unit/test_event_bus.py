"""The event bus against a real Redis: events reach every instance's listeners, and a lost
subscription (the connection killed under it, as in a Redis restart) is made again, after which
every listener hears ``resync`` (what was published meanwhile was not heard)."""

from __future__ import annotations

import asyncio

from avatar_server.store.connection import client_from_url
from avatar_server.store.events import RESYNC, EventBus


async def _next(q: asyncio.Queue, timeout: float = 5.0) -> dict:
    return await asyncio.wait_for(q.get(), timeout)


async def test_a_lost_subscription_is_made_again_and_listeners_resync(redis_url: str) -> None:
    r = client_from_url(redis_url)
    bus = EventBus(r)
    other = EventBus(client_from_url(redis_url))  # a second instance
    await bus.start()
    await other.start()
    try:
        async with bus.listen("s1") as q1, other.listen("s1") as q1b, bus.listen("s2") as q2:
            await bus.publish("s1", {"type": "status", "status": "READY"})
            assert await _next(q1) == {"type": "status", "status": "READY"}
            assert await _next(q1b) == {"type": "status", "status": "READY"}
            assert q2.empty()

            killed = await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed >= 2  # both instances' subscriptions
            assert await _next(q1) == RESYNC
            assert await _next(q2) == RESYNC
            assert await _next(q1b) == RESYNC

            await other.publish("s2", {"type": "ended", "reason": "cap"})  # heard again after it
            assert (await _next(q2))["type"] == "ended"
    finally:
        await bus.close()
        await other.close()
        await bus.close()  # idempotent
        await r.aclose()
        await other.r.aclose()
