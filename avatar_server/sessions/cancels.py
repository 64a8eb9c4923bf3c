"""Cancelling a session's upstream session, until it is done.

A cancel that fails (or is cut short) arms a ``cancel`` timer that retries it
(``sessions.timers``). One that succeeds frees the session's upstream slot and records, in
the background and bounded, the upstream's final status and billed duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..errors import AvatarServerError
from ..store.sessions import SessionStore
from ..upstream import UpstreamClient
from .tasks import SessionTasks
from .timer_names import TimerKind

log = logging.getLogger("avatar_server.sessions")

RETRY_AFTER = 2.0  # seconds until a failed cancel is tried again
FINAL_READS = 4  # post-cancel status reads in flight at once: they never crowd out cancels
FINAL_READ_TIMEOUT = 5.0


class UpstreamCancels:
    def __init__(
        self,
        *,
        upstream: UpstreamClient,
        store: SessionStore,
        tasks: SessionTasks,
        free_slot: Callable[[str], Awaitable[None]],
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.tasks = tasks
        self.free_slot = free_slot  # the session's upstream slot serves the next one
        self._final_reads: asyncio.Semaphore | None = None

    async def cancel(self, session_id: str, upstream_id: str) -> bool:
        """Cancel upstream; on failure arm a ``cancel`` timer that retries until it succeeds.

        Returns once the DELETE is done: the status read that records the final upstream status
        and duration runs in the background (bounded), so a cancel never waits behind a slow read."""
        retry = TimerKind.CANCEL.of(session_id, upstream_id)
        try:
            await self.upstream.cancel_session(upstream_id)
        except AvatarServerError as exc:
            log.warning(
                "upstream cancel failed; will retry",
                extra={"session_id": session_id, "upstream_id": upstream_id, "error": exc.code},
            )
            await self.store.add_timer(retry, time.time() + RETRY_AFTER)
            return False
        except asyncio.CancelledError:
            # cut short (a timer handler's time limit, shutdown): it may not have happened — retry it
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.add_timer(retry, time.time() + RETRY_AFTER))
            raise
        await self.free_slot(session_id)
        self.tasks.track(self._record_final_status(session_id, upstream_id))
        return True

    async def _record_final_status(self, session_id: str, upstream_id: str) -> None:
        """Best effort: the upstream's status and billed duration after our cancel (dropped if slow)."""
        if self._final_reads is None:
            self._final_reads = asyncio.Semaphore(FINAL_READS)
        try:
            async with asyncio.timeout(FINAL_READ_TIMEOUT), self._final_reads:
                state = await self.upstream.get_session(upstream_id, op="check")
            await self.store.set_fields(
                session_id, {"upstreamStatus": state.status.value, "upstreamDuration": state.duration}
            )
        except (AvatarServerError, TimeoutError):
            pass
        except Exception as exc:  # e.g. Redis away: only a record detail is lost
            log.warning("final upstream status not recorded: %s", type(exc).__name__,
                        extra={"session_id": session_id, "upstream_id": upstream_id})
