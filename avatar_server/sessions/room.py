"""The waiting room: upstream slots, starts waiting in turn, their place in line and its ETA.

Redis holds the room (``store.room``), so every instance shares it. This object adds what
an instance needs around it: the limit in force (configured, or learned from the upstream's
first ``queued`` answer when the setting is 0), the expected wait (from the measured rate at
which the room was served), and the announcer that tells this instance's waiting sockets
their new place in line, at most once a second, only when it changed (and it never rises).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ServerBusy
from ..models.signal import waiting_message
from ..store.room import Entered, RoomSnapshot, RoomStore

log = logging.getLogger("avatar_server.room")

ADMIN_LANE = "admin"

EndsOf = Callable[[list[str]], Awaitable[list[float | None]]]
PROBE_WINDOW = 10  # with no limit known: at most this many slot holders not yet answered as running
ANNOUNCE_EVERY = 1.0  # seconds: the most often a waiting socket hears its place
RATE_CACHE = 1.0


class WaitingRoom:
    def __init__(self, store: RoomStore, *, configured_limit: int, size: int, cap_seconds: int,
                 enabled: bool = True, ends_of: EndsOf | None = None) -> None:
        self.store = store
        self.ends_of = ends_of  # endsAt (or None: not running yet) of sessions, by id
        self.enabled = enabled  # off: every start goes straight upstream; no slots, no learning
        self.configured_limit = configured_limit
        self.size = size
        self.cap_seconds = cap_seconds
        self._listeners: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._announced: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._rate: tuple[float, float, list[float]] = (-RATE_CACHE, 0.0, [])  # see _service_rate
        self._learned_logged = 0  # the learned limit last logged

    # --- slots and places ----------------------------------------------------------------
    async def enter(self, session_id: str, lane: str) -> Entered:
        """Take a slot (``go``) or a place in line; refuse with 503 ``server_busy`` when full."""
        if not self.enabled:
            return Entered(go=True)
        entered = await self.store.enter(session_id, lane, limit=self.configured_limit, size=self.size,
                                         probe=self._probe)
        if entered.full:
            raise ServerBusy(
                f"the waiting room is full ({entered.waiting} waiting); please try again shortly",
                retry_after=await self.retry_after(), waiting=entered.waiting,
            )
        return entered

    async def grant(self) -> list[str]:
        if not self.enabled:
            return []
        return await self.store.grant(limit=self.configured_limit, probe=self._probe)

    async def release(self, session_id: str) -> list[str]:
        """Give back a slot; returns the waiting starts it (and any other free slot) now serves."""
        if not self.enabled:
            return []
        await self.store.release(session_id)
        return await self.grant()

    async def leave(self, session_id: str) -> None:
        await self.store.leave(session_id)
        self._announced.pop(session_id, None)

    @property
    def learns(self) -> bool:
        """Whether the limit is learned from the upstream's answers (no configured limit)."""
        return self.enabled and not self.configured_limit

    @property
    def _probe(self) -> int:
        return PROBE_WINDOW if self.learns else 0

    async def upstream_running(self, session_id: str) -> list[str]:
        """The upstream answered ``session_id`` as holding one of its slots (not queued): with no
        configured limit, it counts when the limit is learned, and it leaves the probe window, so
        the waiting starts that now fit are served (returned, to be started)."""
        if not self.learns or not await self.store.running(session_id):
            return []
        return await self.grant()

    async def upstream_queued(self, session_id: str) -> None:
        """The upstream queued ``session_id``: with no configured limit, it is full — learn its limit."""
        if self.configured_limit or not self.enabled:
            return
        limit = await self.store.learn_limit(session_id)
        if limit != self._learned_logged:
            self._learned_logged = limit
            log.info("the upstream queued a session: holding further starts in the waiting room "
                     "(learned concurrency %d)", limit)

    async def waiting(self, session_id: str) -> tuple[int, float | None] | None:
        """(position shown, etaSeconds) while the session waits, else None."""
        _, shown = await self.store.position(session_id)
        if not shown:
            return None
        return shown, await self.eta(shown)

    async def eta(self, position: int) -> float:
        """Seconds until ``position`` is served: from the measured rate at which the room was served;
        before enough were served, from when the sessions holding the slots end (a holder not yet
        running counts a whole cap), one cap per further round of slots."""
        rate, ends = await self._service_rate()
        if rate > 0:
            return round(position / rate, 1)
        if not ends:
            return float(self.cap_seconds * position)
        rounds, index = divmod(position - 1, len(ends))
        return round(ends[index] + rounds * self.cap_seconds, 1)

    async def retry_after(self) -> float:
        rate, ends = await self._service_rate()
        wait = 1.0 / rate if rate > 0 else (ends[0] if ends else self.cap_seconds)
        return max(1.0, min(60.0, wait))

    async def _service_rate(self) -> tuple[float, list[float]]:
        """(starts served from the room per second, measured over its last 50 — 0 if too few;
        seconds until each slot holder ends, soonest first). Cached for a second."""
        at, rate, ends = self._rate
        if time.monotonic() - at < RATE_CACHE:
            return rate, ends
        snap = await self.store.snapshot(self.configured_limit)
        grants = snap.recent_grants
        rate = 0.0
        if len(grants) >= 3:
            span = max(time.time(), grants[0]) - grants[-1]
            if span > 0:
                rate = (len(grants) - 1) / span
        ends = []
        if rate <= 0 and self.ends_of is not None:
            now = time.time()
            holders = [sid for sid, _ in await self.store.alive_since()]
            ends = sorted(max(0.0, e - now) if e else float(self.cap_seconds)
                          for e in await self.ends_of(holders))
        self._rate = (time.monotonic(), rate, ends)
        return rate, ends

    async def snapshot(self) -> RoomSnapshot:
        return await self.store.snapshot(self.configured_limit)

    # --- announcing places to this instance's sockets -----------------------------------
    @contextlib.contextmanager
    def listen(self, session_id: str, queue: asyncio.Queue[dict[str, Any]]) -> Any:
        """While inside, ``queue`` gets a ``status`` frame when the session's place changes."""
        self._listeners[session_id] = queue
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._announce(), name="room-announcer")
        try:
            yield
        finally:
            if self._listeners.get(session_id) is queue:
                del self._listeners[session_id]
            self._announced.pop(session_id, None)

    def note_announced(self, session_id: str, position: int) -> None:
        self._announced[session_id] = position

    async def _announce(self) -> None:
        while not self._closed and self._listeners:
            try:
                await self._announce_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("announcing places failed (%s)", type(exc).__name__)
            await asyncio.sleep(ANNOUNCE_EVERY)
        self._task = None

    async def _announce_once(self) -> None:
        order = await self.store.waiting_ids()
        ranks = {sid: i + 1 for i, sid in enumerate(order)}
        local = [sid for sid in self._listeners if sid in ranks]
        if not local:
            return
        shown = await self.store.shown_positions(local)
        lower: dict[str, int] = {}
        for sid in local:
            pos = min(ranks[sid], shown.get(sid, ranks[sid]))
            if pos != shown.get(sid):
                lower[sid] = pos
            if self._announced.get(sid) != pos:
                self._announced[sid] = pos
                q = self._listeners.get(sid)
                if q is not None:
                    if q.full():
                        with contextlib.suppress(asyncio.QueueEmpty):
                            q.get_nowait()
                    q.put_nowait(waiting_message(pos, await self.eta(pos)))
        await self.store.set_shown(lower)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
