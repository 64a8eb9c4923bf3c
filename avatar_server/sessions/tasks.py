"""The in-process work of the session service: provisioning steps, one per session at a time
(create, finish), and clean-up work that must not be cut short (an upstream cancel, a final
status read, an observer's call). The service owns one ``SessionTasks`` and closes it; the
provisioner runs its steps on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable


class SessionTasks:
    def __init__(self) -> None:
        self._steps: dict[str, asyncio.Task[None]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    def spawn(self, session_id: str, step: Awaitable[None]) -> None:
        """Run one provisioning step (create, finish) of ``session_id`` as a task owned here."""
        task = asyncio.ensure_future(step)
        self._steps[session_id] = task
        task.add_done_callback(lambda t, sid=session_id: self._steps.pop(sid, None) if self._steps.get(sid) is t else None)

    def step_of(self, session_id: str) -> asyncio.Task[None] | None:
        return self._steps.get(session_id)

    def stepping(self) -> list[str]:
        """Sessions with a provisioning step (create, finish) running on this instance."""
        return list(self._steps)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._steps

    def track(self, coro: Awaitable[None]) -> None:
        """Run clean-up work (e.g. cancelling an upstream session) that must not be cut short."""
        task = asyncio.ensure_future(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def cancel_steps(self) -> None:
        """Cancel the provisioning steps and wait for them to finish."""
        tasks = list(self._steps.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def drain_cleanups(self, timeout: float) -> None:
        """Let the clean-up work finish (at most ``timeout`` seconds)."""
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=timeout)
