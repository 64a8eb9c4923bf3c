"""ICE server lists (WebRTC's ``RTCIceServer`` objects): the one parser of
``AVATAR_ENGINE_ICE_SERVERS``, which the engine's media peer uses and the server hands to
browsers with ``webrtc`` credentials. Standard library only, so both may use it."""

from __future__ import annotations

import json
from typing import Any

ICE_SERVERS_VARIABLE = "AVATAR_ENGINE_ICE_SERVERS"


def parse_ice_servers(text: str) -> list[dict[str, Any]]:
    """A JSON list of objects, each with ``urls``; ``ValueError`` (naming the variable) otherwise."""
    try:
        servers = json.loads(text)
    except json.JSONDecodeError:
        servers = None
    if not isinstance(servers, list) or not all(isinstance(x, dict) and "urls" in x for x in servers):
        raise ValueError(f'{ICE_SERVERS_VARIABLE} must be a JSON list like [{{"urls": "stun:host:3478"}}]')
    return servers
