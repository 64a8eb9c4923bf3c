"""The local engine's backend channel, client side: one WebSocket per session (engine/backend.py says
the frames). Each ``rpc_request`` is answered on a task of its own, so a slow site backend holds up
nothing but its own call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .. import jsonlimits
from ..errors import ToolCallFailed

log = logging.getLogger("avatar_server.tools")

APPLICATION_ERROR = 1500  # LiveKit's RpcError code for an application error
MAX_FRAME = 1_048_576

Handle = Callable[[str, str, str], Awaitable[str]]  # (method, caller identity, payload) → JSON text


async def serve_engine_channel(http: aiohttp.ClientSession, url: str, token: str, handle: Handle) -> None:
    """Hold the channel until the engine closes it (the session ended) or this task is cancelled."""
    calls: set[asyncio.Task[None]] = set()
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, heartbeat=20,
                               max_msg_size=MAX_FRAME) as ws:

        async def answer(data: dict[str, Any]) -> None:
            reply: dict[str, Any] = {"type": "rpc_response", "id": data.get("id")}
            try:
                reply["payload"] = await handle(str(data.get("method", "")), str(data.get("callerIdentity", "")),
                                                data.get("payload") if isinstance(data.get("payload"), str) else "")
            except ToolCallFailed as exc:
                reply["error"] = {"code": APPLICATION_ERROR, "message": exc.message}
            except Exception:
                log.exception("a tool call failed")
                reply["error"] = {"code": APPLICATION_ERROR, "message": "the tool failed"}
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps(reply))

        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = jsonlimits.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("type") == "rpc_request":
                    task = asyncio.create_task(answer(data))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
        finally:
            for task in list(calls):
                task.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
