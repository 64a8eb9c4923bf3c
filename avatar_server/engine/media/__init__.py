"""The local engine's WebRTC media peer (aiortc is imported only inside this package).

See docs/media.md. Entry points: ``MediaManager`` (one peer per session) and
``add_rtc_routes`` (``POST /v1/rtc/{id}``: SDP offer in, answer out).
"""

from __future__ import annotations

from avatar_server.engine.media.conversation import KnowledgeSource, StaticKnowledge
from avatar_server.engine.media.manager import MediaManager
from avatar_server.engine.media.peer import CloseReason
from avatar_server.engine.media.routes import SessionMedia, add_rtc_routes, rtc_token_ok

__all__ = [
    "CloseReason",
    "KnowledgeSource",
    "MediaManager",
    "SessionMedia",
    "StaticKnowledge",
    "add_rtc_routes",
    "rtc_token_ok",
]
