"""What ``GET /metrics`` reads from Redis at scrape time: figures of the whole deployment (every
instance shares them), as opposed to the per-instance counters the metrics package keeps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import keys
from .connection import Redis

CHUNK = 500  # records read per round trip


@dataclass
class SessionCounts:
    by_status: dict[str, int] = field(default_factory=dict)  # sessions not ENDED, by status
    ended: int = 0  # ENDED sessions still indexed
    past_cap: int = 0  # RUNNING sessions whose endsAt is more than ``grace`` seconds ago


class DeploymentFigures:
    def __init__(self, redis: Redis) -> None:
        self.r = redis

    async def sessions(self, now: float, grace: float) -> SessionCounts:
        """Status of every session in the active index (one HMGET each, pipelined in chunks)."""
        out = SessionCounts()
        ids = await self.r.zrange(keys.sessions_active(), 0, -1)
        for start in range(0, len(ids), CHUNK):
            async with self.r.pipeline(transaction=False) as p:
                for sid in ids[start:start + CHUNK]:
                    p.hmget(keys.session(sid), "status", "endsAt")
                rows = await p.execute()
            for status_raw, ends_raw in rows:
                if status_raw is None:
                    continue
                status = json.loads(status_raw)
                out.by_status[status] = out.by_status.get(status, 0) + 1
                ends = json.loads(ends_raw) if ends_raw else None
                if status == "RUNNING" and ends is not None and now - ends > grace:
                    out.past_cap += 1
        out.ended = int(await self.r.zcard(keys.sessions_ended()))
        return out
