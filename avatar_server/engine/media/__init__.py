"""The local engine's WebRTC media peer (aiortc is imported only inside this package).

See docs/media.md. Entry point: ``MediaManager`` (one peer per session). Its HTTP face,
``POST /v1/rtc/{id}`` (SDP offer in, answer out), is ``engine.http.rtc.add_rtc_routes``.
"""

from __future__ import annotations

from avatar_server.engine.media.conversation import KnowledgeSource, StaticKnowledge
from avatar_server.engine.media.manager import MediaManager
from avatar_server.engine.media.peer import CloseReason

__all__ = [
    "CloseReason",
    "KnowledgeSource",
    "MediaManager",
    "StaticKnowledge",
]
