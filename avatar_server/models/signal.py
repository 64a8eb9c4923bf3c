"""The signal WebSocket protocol, as pure functions (no socket here).

Server → client (JSON text frames):
    {"type": "status", "status": "PROVISIONING"|"READY"|"RUNNING", "queued": bool, "endsAt": iso|null}
    {"type": "credentials", "sessionId", "transport": "webrtc"|"livekit", "serverUrl", "token", "roomName",
     "endsAt", "maxDuration", "iceServers" (webrtc only: RTCIceServer objects for the browser)}
    {"type": "warning", "remainingSeconds": int}
    {"type": "ended", "reason": <endReason>, "message": str}       — then the server closes the socket
    {"type": "pong"}
    {"type": "error", "code": str, "message": str}
Client → server:
    {"type": "end"}     end the session (reason ``client``)
    {"type": "ping"}    answered with ``pong``
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from avatar_server import jsonlimits
from avatar_server.models.sessions import END_MESSAGES, EndReason, SessionRecord, SessionStatus, iso

MAX_CLIENT_MESSAGE_BYTES = 1024
CLIENT_TYPES = ("end", "ping")


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClientMessage:
    type: Literal["end", "ping"]


def parse_client(text: str | bytes) -> ClientMessage:
    if isinstance(text, bytes):
        raise ProtocolError("binary_not_supported", "send JSON text frames")
    if len(text.encode()) > MAX_CLIENT_MESSAGE_BYTES:
        raise ProtocolError("message_too_large", f"messages may be at most {MAX_CLIENT_MESSAGE_BYTES} bytes")
    try:
        data = jsonlimits.loads(text)
    except ValueError:  # not JSON, or past jsonlimits' limits (nesting, numbers)
        raise ProtocolError("invalid_json", "messages must be JSON objects") from None
    if not isinstance(data, dict) or "type" not in data:
        raise ProtocolError("invalid_message", "messages must be JSON objects with a 'type'")
    kind = data["type"]
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type; expected one of {', '.join(CLIENT_TYPES)}")
    return ClientMessage(type=kind)


def dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def credentials_message(
    *, session_id: str, transport: str, server_url: str, token: str, room_name: str, ends_at: str | None,
    max_duration: int, ice_servers: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "credentials",
        "sessionId": session_id,
        "transport": transport,
        "serverUrl": server_url,
        "token": token,
        "roomName": room_name,
        "endsAt": ends_at,
        "maxDuration": max_duration,
    }
    if transport == "webrtc":
        message["iceServers"] = list(ice_servers)
    return message


def status_message(rec: SessionRecord) -> dict[str, Any]:
    """The ``status`` frame of a session (one waiting in the room: ``waiting_message``)."""
    return {"type": "status", "status": rec.status.value, "queued": rec.queued, "endsAt": iso(rec.endsAt)}


def waiting_message(position: int, eta_seconds: float | None) -> dict[str, Any]:
    """The ``status`` frame of a start waiting in the room: its place in line and the expected wait."""
    return {"type": "status", "status": SessionStatus.PROVISIONING.value, "queued": True, "position": position,
            "etaSeconds": eta_seconds, "endsAt": None}


def ended_message(reason: EndReason | None) -> dict[str, Any]:
    """The ``ended`` frame: the end reason and its message for a person (no reason: ``error``)."""
    reason = reason or EndReason.ERROR
    return {"type": "ended", "reason": reason.value, "message": END_MESSAGES[reason]}


def warning_message(remaining_seconds: int) -> dict[str, Any]:
    return {"type": "warning", "remainingSeconds": remaining_seconds}


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


PONG: dict[str, Any] = {"type": "pong"}
