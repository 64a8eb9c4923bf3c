"""The catalog service the handlers talk to: avatars (``.avatars``) and knowledge documents
(``.documents``), one code path for both upstreams.

Avatars and documents live upstream (Runway, or the embedded engine over loopback HTTP); they
are created, read, changed and deleted there with Runway's field names. Redis keeps what the
server needs (``store.catalog``): each document's token count, the links in both directions
(``usedBy``), a cache of each avatar (name, image, status) and our own list order. The two
parts share one ``sync.CatalogSync`` (the upstream ↔ Redis sync) and so one lock and one limit.
"""

from __future__ import annotations

from typing import Any

from ..models.documents import KNOWLEDGE_TOKEN_LIMIT
from ..models.sessions import EndReason, SessionStatus
from ..store.catalog import CatalogLock, CatalogStore
from ..upstream import UpstreamClient
from .avatars import AvatarService, SessionsEnder
from .documents import DocumentService
from .images import Resolver
from .sync import CatalogSync


class CatalogService:
    def __init__(
        self,
        *,
        store: CatalogStore,
        lock: CatalogLock,
        upstream: UpstreamClient,
        end_sessions: SessionsEnder | None = None,
        resolver: Resolver | None = None,
        limit: int = KNOWLEDGE_TOKEN_LIMIT,
    ) -> None:
        self.sync = CatalogSync(store=store, lock=lock, upstream=upstream, limit=limit)
        self.avatars = AvatarService(self.sync, end_sessions=end_sessions, resolver=resolver)
        self.documents = DocumentService(self.sync)


async def end_avatar_sessions(sessions: Any, avatar_id: str) -> int:
    """End (reason ``admin``) every session not ENDED that uses this custom avatar."""
    ended = 0
    for rec in await sessions.store.get_many(await sessions.store.active_ids()):
        avatar = rec.avatar or {}
        if (rec.status is not SessionStatus.ENDED and avatar.get("type") == "custom"
                and str(avatar.get("avatarId", "")).lower() == avatar_id):
            await sessions.end(rec.id, EndReason.ADMIN, "the avatar was deleted")
            ended += 1
    return ended
