"""Which sessions hold a backend channel, and for how long.

A session observer: when a session with ``backend_rpc`` tools starts (its credentials went to the
visitor), the instance that started it calls the upstream's ``connect_backend`` once and holds the
channel on a task of its own until the session ends — told by ``session_ended`` on this instance, by
the upstream closing the channel (the engine closes it when the session ends; so does a LiveKit room),
or at the latest a little after the session's ``endsAt`` (an end handled by another instance). Every
call is answered on its own task within its tool's ``timeoutSeconds``: nothing here is on the path of
a cap, a timer or another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..errors import AvatarServerError
from ..models.sessions import SessionRecord
from .channel import serve_engine_channel
from .handler import ToolHandler
from .site_backend import SiteBackend

log = logging.getLogger("avatar_server.tools")

ENGINE_TRANSPORT = "avatar-engine"
END_GRACE = 5.0  # s after endsAt: a channel never outlives its session by more


def has_backend_tools(rec: SessionRecord) -> bool:
    return any(t.get("type") == "backend_rpc" for t in rec.tools or [])


class ToolService:
    def __init__(self, *, upstream: Any, handler: ToolHandler, backend: SiteBackend,
                 livekit: Any | None = None) -> None:
        """``upstream``: has ``connect_backend(upstream_id)``; ``livekit``: joins a LiveKit room for
        ``(credentials, handle, session record)`` (``livekit_rpc.hold_room``), or None where it is not installed."""
        self.upstream = upstream
        self.handler = handler
        self.backend = backend
        self.livekit = livekit
        self._held: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        # connect_backend calls made, by outcome (metrics and tests)
        self.connects: dict[str, int] = {}

    async def session_started(self, rec: SessionRecord) -> None:
        if self._closed or not has_backend_tools(rec) or not rec.upstreamId or rec.id in self._held:
            return
        task = asyncio.create_task(self._hold(rec), name=f"tools:{rec.id}")
        self._held[rec.id] = task
        task.add_done_callback(lambda _t, sid=rec.id: self._held.pop(sid, None))

    async def session_ended(self, rec: SessionRecord) -> None:
        task = self._held.pop(rec.id, None)
        if task is not None:
            task.cancel()

    def holding(self) -> int:
        return len(self._held)

    async def _hold(self, rec: SessionRecord) -> None:
        deadline = (rec.endsAt or time.time() + rec.maxDuration) + END_GRACE
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                assert rec.upstreamId is not None
                try:
                    creds = await self.upstream.connect_backend(rec.upstreamId)
                except AvatarServerError as exc:
                    self._count("failed")
                    log.warning("connect_backend failed: %s", exc.message, extra={"session_id": rec.id})
                    return
                self._count("ok")

                async def handle(method: str, identity: str, payload: str) -> str:
                    return await self.handler.handle(rec, method, identity, payload)

                if creds.get("transport") == ENGINE_TRANSPORT:
                    await serve_engine_channel(self.backend.session(), str(creds["url"]), str(creds["token"]),
                                               handle)
                elif self.livekit is not None:
                    await self.livekit(creds, handle, rec)
                else:
                    log.warning("the session's backend tools need LiveKit (pip install livekit)",
                                extra={"session_id": rec.id})
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the session's tool channel failed", extra={"session_id": rec.id})

    def _count(self, outcome: str) -> None:
        self.connects[outcome] = self.connects.get(outcome, 0) + 1

    async def close(self) -> None:
        """Leave every channel; idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._held.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backend.close()
