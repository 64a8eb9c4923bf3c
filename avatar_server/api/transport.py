"""Which media transport a ``POST /v1/sessions/connect`` caller can use.

The answer's ``transport`` is ``livekit`` (Runway: a LiveKit room) or ``webrtc`` (the local
engine: a plain ``RTCPeerConnection`` offered to ``serverUrl``). A caller says what it can use:

- ``?transport=livekit``, ``?transport=webrtc`` or ``?transport=livekit,webrtc``;
- without it, a caller with its publishable key in the URL (``?key=pk_…``) is taken for one of
  Runway's SDKs (``@runwayml/avatars-react``'s ``connectUrl``: it cannot set a header, and it
  joins LiveKit rooms only): ``livekit``;
- any other caller (``Authorization`` header): either, as before.

A caller that cannot use the server's transport gets 409 ``transport_unsupported`` — before
anything is started when the transport is certain (the local engine speaks ``webrtc``; Runway
``livekit``), else once the credentials say otherwise (an upstream other than Runway's), and
then the session is ended and its credentials are never handed out. A ``/connect`` answer is
never ``{sessionId, sessionKey}``: credentials are always consumed by the server.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import SETTINGS
from ..errors import Conflict, ValidationFailed

TRANSPORTS = ("livekit", "webrtc")

WIDGET_HINT = ("use the <avatar-widget> (docs/embedding.md), which speaks both; Runway's SDKs need the "
               "server in Runway mode (RUNWAYML_API_SECRET)")


def accepted_transports(request: web.Request) -> frozenset[str]:
    raw = request.query.getall("transport", [])
    if not raw:
        return frozenset({"livekit"}) if "key" in request.query else frozenset(TRANSPORTS)
    wanted = {part.strip().lower() for value in raw for part in value.split(",") if part.strip()}
    unknown = sorted(wanted - set(TRANSPORTS))
    if unknown or not wanted:
        raise ValidationFailed(f"transport must be one or more of {', '.join(TRANSPORTS)} (comma-separated)",
                               field="transport")
    return frozenset(wanted)


def server_transport(request: web.Request) -> str:
    """The transport this server's sessions use: ``webrtc`` on the local engine, ``livekit`` on
    Runway (an upstream that answers otherwise is caught by ``check_delivered``)."""
    return "webrtc" if request.app[SETTINGS].engine_mode else "livekit"


def unsupported(transport: str, accepted: frozenset[str]) -> Conflict:
    if transport == "webrtc":
        message = ("the local engine speaks WebRTC (transport \"webrtc\"), not LiveKit, which Runway's SDKs "
                   "join; " + WIDGET_HINT + ". A caller that speaks WebRTC adds ?transport=webrtc")
    else:
        message = (f"this server's sessions use transport \"{transport}\" (LiveKit rooms), which this "
                   f"caller does not accept ({', '.join(sorted(accepted))}); " + WIDGET_HINT)
    return Conflict(message, code="transport_unsupported", transport=transport, accepted=sorted(accepted))


def check_before_start(request: web.Request, accepted: frozenset[str]) -> None:
    transport = server_transport(request)
    if transport not in accepted:
        raise unsupported(transport, accepted)
