"""Recovery: the work a dead instance left behind, done by whichever instance is alive.

Run by the timer loop's sweep (every lease, and at start): the upstream slots of sessions
that ended (or were never stored) on an instance that died before it gave them back are
freed; the waiting room is served if slots are free; PROVISIONING sessions no live instance
holds (their lease lapsed) are resumed here — except one whose create was in flight when its
instance died: it may exist upstream unseen, so it ends and the create journal's
reconciliation looks for it (``sessions.reconcile``).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from ..models.sessions import EndReason, SessionRecord, SessionStatus
from ..store.sessions import SessionStore
from .provisioner import Provisioner
from .reconcile import CreateReconciler
from .room import WaitingRoom
from .tasks import SessionTasks

READ_BATCH = 200  # records read in one pipeline (one round trip)
SLOT_GRACE = 60.0  # seconds a slot is left to its holder before the sweep looks at it


class RecoveryOwner(Protocol):
    """What recovery asks of the session service (``SessionService`` is one)."""

    async def end(self, session_id: str, reason: EndReason, detail: str | None = None, **fields: Any) -> Any: ...
    async def free_slot(self, session_id: str) -> None: ...
    async def start_granted(self, session_ids: list[str]) -> None: ...
    async def cancel_upstream(self, session_id: str, upstream_id: str) -> bool: ...


class Recovery:
    def __init__(
        self,
        *,
        sessions: RecoveryOwner,
        store: SessionStore,
        room: WaitingRoom,
        tasks: SessionTasks,
        provisioner: Provisioner,
        reconciler: CreateReconciler,
        instance_id: str,
        lease_seconds: float,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.room = room
        self.tasks = tasks
        self.provisioner = provisioner
        self.reconciler = reconciler
        self.instance_id = instance_id
        self.lease_seconds = lease_seconds

    async def recover(self) -> int:
        """Resume provisioning of PROVISIONING sessions that no live instance holds (after a restart),
        and serve the waiting room if slots are free (a slot freed by an instance that died).
        Returns how many were resumed."""
        resumed = 0
        await self.sweep_slots()
        await self.sessions.start_granted(await self.room.grant())
        ids = [sid for sid in await self.store.active_ids()
               if sid not in self.tasks and sid not in self.provisioner.poller]
        orphans: list[SessionRecord] = []
        for i in range(0, len(ids), READ_BATCH):
            orphans += [r for r in await self.store.get_many(ids[i:i + READ_BATCH])
                        if r.status is SessionStatus.PROVISIONING and not r.inRoom]
        for rec in orphans:
            sid = rec.id
            if await self.store.take_lease(sid, self.instance_id, self.lease_seconds):
                if rec.upstreamId is None and rec.createSentAt is not None:
                    # its create was in flight on an instance that died: it may exist upstream unseen
                    await self.sessions.end(sid, EndReason.ERROR, "the instance creating this session stopped")
                    self.reconciler.poke()  # find it upstream and cancel it (sessions.reconcile)
                    continue
                self.provisioner.start(rec)
                resumed += 1
        return resumed

    async def sweep_slots(self, older_than: float = SLOT_GRACE) -> int:
        """Free the slots of sessions that ended (or were never stored) on an instance that died
        before it gave them back. Bounded by the slots held (the upstream concurrency)."""
        freed = 0
        cutoff = time.time() - older_than
        for sid, taken in await self.room.store.alive_since():
            if taken > cutoff or sid in self.tasks:
                continue
            rec = await self.store.get(sid)
            if rec is None:
                await self.sessions.free_slot(sid)
                freed += 1
            elif rec.status is SessionStatus.ENDED and (rec.endedAt or 0) < cutoff:
                if rec.upstreamId:
                    await self.sessions.cancel_upstream(sid, rec.upstreamId)  # idempotent; frees on success
                else:
                    await self.sessions.free_slot(sid)
                freed += 1
        return freed
