"""The signal WebSocket: authentication and the aiohttp side of ``SignalTransport``."""

from __future__ import annotations

import contextlib

from aiohttp import WSMsgType, web

from ..appkeys import BROKER, SESSIONS, SOCKETS
from ..models.signal import MAX_CLIENT_MESSAGE_BYTES
from .auth import signal_principal
from .params import path_id

routes = web.RouteTableDef()


class AiohttpTransport:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        if not self.ws.closed:
            await self.ws.send_str(text)

    async def receive(self) -> str | bytes | None:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                return str(msg.data)
            if msg.type == WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode()[:120])


@routes.get("/v1/sessions/{id}/signal")
async def signal(request: web.Request) -> web.StreamResponse:
    sid = path_id(request, "id", "session")
    await signal_principal(request, sid)
    await request.app[SESSIONS].get(sid)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_CLIENT_MESSAGE_BYTES * 4, autoping=True)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        await request.app[BROKER].serve(sid, AiohttpTransport(ws))
    finally:
        sockets.discard(ws)
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
