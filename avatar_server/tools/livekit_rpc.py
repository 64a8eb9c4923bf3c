"""Runway's backend channel: the session's LiveKit room, joined with LiveKit's Python SDK (``livekit``).

The only module that imports ``livekit``. ``hold_room`` is the ``livekit=`` hook of ``ToolService``:
given ``connect_backend``'s ``{url, token, roomName}`` it joins the room (within ``CONNECT_TIMEOUT``),
registers one RPC method per ``backend_rpc`` tool of the session and stays until the room closes (Runway
ends the session) or its task is cancelled (the session ended here, or the service's deadline); then it
leaves the room (within ``LEAVE_TIMEOUT``). Each call is answered by ``rpc_handler``: the SDK runs every
invocation on a task of its own and cancels it at the caller's ``response_timeout``, so a slow site
backend holds up only its own call.

Errors go back as ``livekit.rtc.RpcError``: a caller whose identity is not ``worker:…`` gets
``REFUSED_CALLER`` (403, a developer code: LiveKit keeps 1001–1999 for its own); every other failure —
a payload that is not a JSON object, a site backend that answered an error or not in time — gets
LiveKit's ``APPLICATION_ERROR`` (1500) with the handler's message, as the engine's channel answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc

from ..errors import ToolCallFailed
from ..models.sessions import SessionRecord
from .handler import WORKER_PREFIX

log = logging.getLogger("avatar_server.tools")

CONNECT_TIMEOUT = 10.0  # s: the whole join (the SDK retries a signal connection; this bounds them all)
ATTEMPTS = 5  # the SDK's per-attempt timeout is CONNECT_TIMEOUT / ATTEMPTS
LEAVE_TIMEOUT = 5.0  # s: leaving the room (the SDK cancels calls still running first)
REFUSED_CALLER = 403
APPLICATION_ERROR = int(rtc.RpcError.ErrorCode.APPLICATION_ERROR)

Handle = Callable[[str, str, str], Awaitable[str]]  # (method, caller identity, payload) → JSON text
RpcHandler = Callable[[rtc.RpcInvocationData], Awaitable[str]]


def rpc_handler(method: str, handle: Handle) -> RpcHandler:
    """The LiveKit RPC handler for the tool ``method``: the JSON result, or an ``RpcError``."""

    async def on_call(data: rtc.RpcInvocationData) -> str:
        identity = data.caller_identity or ""
        try:
            return await handle(method, identity, data.payload or "")
        except ToolCallFailed as exc:
            code = APPLICATION_ERROR if identity.startswith(WORKER_PREFIX) else REFUSED_CALLER
            raise rtc.RpcError(code, exc.message) from None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a tool call failed", extra={"tool": method})
            raise rtc.RpcError(APPLICATION_ERROR, "the tool failed") from None

    return on_call


def backend_tool_names(rec: SessionRecord) -> list[str]:
    return [str(t["name"]) for t in rec.tools or [] if t.get("type") == "backend_rpc" and t.get("name")]


async def hold_room(creds: dict[str, Any], handle: Handle, rec: SessionRecord) -> None:
    """Join the session's room, answer its tools' calls until the room closes or this task is
    cancelled, then leave. A join that fails or takes longer than ``CONNECT_TIMEOUT`` is logged and
    ends the channel (the session goes on; its backend calls go unanswered)."""
    url, token = str(creds.get("url") or ""), str(creds.get("token") or "")
    names = backend_tool_names(rec)
    if not url or not token or not names:
        log.warning("connect_backend answered no LiveKit url or token", extra={"session_id": rec.id})
        return
    timeout = CONNECT_TIMEOUT
    room = rtc.Room()
    closed = asyncio.Event()
    room.on("disconnected", lambda *_: closed.set())
    try:
        try:
            async with asyncio.timeout(timeout):
                # the SDK's own bound is per attempt (it tries 4 times, pausing between): ours bounds the
                # whole join. A join cancelled midway goes on inside the SDK until its attempts run out
                # (short ones, so it soon does), and would stay joined only if the server answered late.
                await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False,
                                                               connect_timeout=timeout / ATTEMPTS))
        except TimeoutError:
            log.warning("could not join the session's LiveKit room within %.0f s", timeout,
                        extra={"session_id": rec.id})
            return
        except rtc.ConnectError as exc:
            log.warning("could not join the session's LiveKit room: %s", exc, extra={"session_id": rec.id})
            return
        for name in names:
            room.local_participant.register_rpc_method(name, rpc_handler(name, handle))
        log.info("joined the session's LiveKit room for %d backend tool(s)", len(names),
                 extra={"session_id": rec.id})
        if room.isconnected():
            await closed.wait()
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LEAVE_TIMEOUT):
                await room.disconnect()
