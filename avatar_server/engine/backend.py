"""The local engine's ``connect_backend``: how a session's ``backend_rpc`` tool calls reach a backend.

Runway answers ``POST /v1/realtime_sessions/{id}/connect_backend`` with LiveKit credentials: the backend
joins the session's room and registers one RPC method per tool; the avatar's agent (identity
``worker:…``) calls them. No LiveKit server runs with the engine, so it offers the same route with its
own transport, one WebSocket per session carrying LiveKit's RPC semantics:

    POST /v1/realtime_sessions/{id}/connect_backend     (API key; no body)
    → 200 {"url": "ws(s)://…/v1/realtime_sessions/{id}/backend", "token": "bt_…",
           "roomName": "…", "transport": "avatar-engine"}
      404 unknown session; 409 the session is over (or not consumed yet)

    GET  /v1/realtime_sessions/{id}/backend            (WebSocket; Authorization: Bearer <token>)

    engine → backend  {"type": "rpc_request", "id": "…", "method": "<tool name>",
                       "callerIdentity": "worker:engine-<session>", "payload": "<JSON text: {\"args\": {…}}>",
                       "responseTimeout": <seconds>}
    backend → engine  {"type": "rpc_response", "id": "…", "payload": "<JSON text: the result>"}
                   or {"type": "rpc_response", "id": "…", "error": {"code": <int>, "message": "…"}}

A newer connection replaces an older one; the socket is closed when the session ends. A tool call
waits up to ``CHANNEL_WAIT`` for a backend to connect, and up to the caller's timeout for the answer;
either running out is an error result (the avatar says so and the call goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from avatar_server import jsonlimits

log = logging.getLogger(__name__)

CHANNEL_WAIT = 5.0  # s: a tool call waits this long for the backend to connect
CALL_TIMEOUT = 35.0  # s: the engine's own bound (the server answers within the tool's timeoutSeconds)
MAX_FRAME = 1_048_576
TRANSPORT = "avatar-engine"


@dataclass
class _Session:
    token: str
    ws: web.WebSocketResponse | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


class BackendHub:
    """The engine's side of every session's backend channel."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._seq = 0
        self._closed = False

    def connect(self, session_id: str) -> str:
        """A new backend token for ``session_id`` (the previous one stops working)."""
        entry = self._sessions.get(session_id)
        token = "bt_" + secrets.token_urlsafe(24)
        if entry is None:
            self._sessions[session_id] = _Session(token=token)
        else:
            entry.token = token
        return token

    def token_ok(self, session_id: str, token: str) -> bool:
        entry = self._sessions.get(session_id)
        return entry is not None and hmac.compare_digest(entry.token.encode(), token.encode())

    async def serve(self, session_id: str, request: web.Request) -> web.WebSocketResponse:
        """Hold the backend's socket for the session until it closes or the session ends."""
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        entry = self._sessions.get(session_id)
        if entry is None or self._closed:
            await ws.close(code=4404, message=b"session over")
            return ws
        old, entry.ws = entry.ws, ws
        if old is not None:
            await old.close(code=4000, message=b"replaced by a newer backend connection")
        entry.connected.set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT or len(msg.data) > MAX_FRAME:
                    continue
                try:
                    data = jsonlimits.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("type") == "rpc_response":
                    future = entry.pending.pop(str(data.get("id")), None)
                    if future is not None and not future.done():
                        future.set_result(data)
        finally:
            if entry.ws is ws:
                entry.ws = None
                entry.connected.clear()
        return ws

    async def call(self, session_id: str, tool: str, args: dict[str, Any],
                   timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """Ask the session's backend: ``{"result": …}`` or ``{"error": "…"}`` (never raises)."""
        entry = self._sessions.get(session_id)
        if entry is None:
            return {"error": "no backend is connected for this session"}
        try:
            async with asyncio.timeout(CHANNEL_WAIT):
                await entry.connected.wait()
        except TimeoutError:
            return {"error": "no backend is connected for this session"}
        ws = entry.ws
        if ws is None or ws.closed:
            return {"error": "the backend went away"}
        self._seq += 1
        call_id = f"rpc_{self._seq}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry.pending[call_id] = future
        try:
            await ws.send_str(json.dumps({
                "type": "rpc_request", "id": call_id, "method": tool,
                "callerIdentity": f"worker:engine-{session_id}",
                "payload": json.dumps({"args": args}), "responseTimeout": timeout,
            }))
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            return {"error": "the backend did not answer in time"}
        except (ConnectionError, RuntimeError):
            return {"error": "the backend went away"}
        finally:
            entry.pending.pop(call_id, None)
        error = answer.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else str(error)
            return {"error": str(message or "the tool failed")}
        payload = answer.get("payload")
        try:
            return {"result": jsonlimits.loads(payload) if isinstance(payload, str) and payload else payload}
        except ValueError:
            return {"result": payload}

    async def end(self, session_id: str) -> None:
        """The session is over: close its backend socket, fail its pending calls."""
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return
        for future in entry.pending.values():
            if not future.done():
                future.set_result({"error": {"message": "the session ended"}})
        if entry.ws is not None:
            with contextlib.suppress(Exception):
                await entry.ws.close(code=1000, message=b"session ended")

    async def close(self) -> None:
        """Close every channel; idempotent."""
        self._closed = True
        for session_id in list(self._sessions):
            await self.end(session_id)
