"""The create journal: an upstream create is written down before it leaves, and crossed out
once its answer (the upstream id) is stored in the session. An entry left behind is a create
whose result nobody recorded — the instance died, or the answer never came — and
``sessions.reconcile`` looks for it upstream.

Also here: the instances' liveness keys (an in-flight entry of a live instance is left alone)
and the lock that lets one instance at a time reconcile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import keys
from .connection import Redis

# KEYS: hash; ARGV: field, value → 1 if the field existed (and was replaced), else 0 (never re-creates)
_HSET_IF_PRESENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: lock; ARGV: owner → delete only our own lock
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

IN_FLIGHT = "in_flight"  # the create is out; its instance will record or reconcile the answer
OPEN = "open"  # nobody will record an answer: reconcile it (ambiguous answer, or its instance is gone)


@dataclass(kw_only=True)
class CreateIntent:
    id: str
    sessionId: str
    avatar: dict[str, Any]
    maxDuration: int
    at: float  # epoch seconds, taken before the request left
    instance: str
    state: str = IN_FLIGHT
    reason: str | None = None  # why it is open: "ambiguous answer", "instance gone", "in flight too long"
    cancelled: list[str] = field(default_factory=list)  # upstream ids cancelled on its account
    decided: bool = False  # its decision line was logged

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> CreateIntent | None:
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError):
            return None


class CreateJournal:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._hset_if_present = redis.register_script(_HSET_IF_PRESENT)
        self._release = redis.register_script(_RELEASE)

    # --- entries -----------------------------------------------------------------------
    async def record(self, intent: CreateIntent) -> None:
        await self.r.hset(keys.create_intents(), intent.id, intent.dumps())

    async def update(self, intent: CreateIntent) -> bool:
        """Rewrite an entry that is still there (one crossed out meanwhile stays crossed out)."""
        return bool(await self._hset_if_present(keys=[keys.create_intents()], args=[intent.id, intent.dumps()]))

    async def clear(self, intent_id: str) -> None:
        await self.r.hdel(keys.create_intents(), intent_id)

    async def all(self) -> list[CreateIntent]:
        rows = await self.r.hgetall(keys.create_intents())
        out: list[CreateIntent] = []
        for intent_id, raw in rows.items():
            intent = CreateIntent.loads(raw)
            if intent is None:  # unreadable: nothing can be matched against it
                await self.clear(intent_id)
                continue
            out.append(intent)
        return out

    # --- instance liveness -------------------------------------------------------------
    async def beat(self, instance: str, ttl: float) -> None:
        await self.r.set(keys.instance_alive(instance), "1", px=max(1, int(ttl * 1000)))

    async def forget_instance(self, instance: str) -> None:
        await self.r.delete(keys.instance_alive(instance))

    async def alive(self, instances: Iterable[str]) -> set[str]:
        ids = sorted(set(instances))
        if not ids:
            return set()
        values = await self.r.mget([keys.instance_alive(i) for i in ids])
        return {i for i, v in zip(ids, values, strict=True) if v is not None}

    # --- the reconcile lock ------------------------------------------------------------
    async def try_lock(self, owner: str, ttl: float) -> bool:
        return bool(await self.r.set(keys.reconcile_lock(), owner, nx=True, px=max(1, int(ttl * 1000))))

    async def release_lock(self, owner: str) -> None:
        await self._release(keys=[keys.reconcile_lock()], args=[owner])
