"""The catalog service the handlers talk to: avatars (``.avatars``) and knowledge documents
(``.documents``), one code path for both upstreams.

Avatars and documents live upstream (Runway, or the embedded engine over loopback HTTP); they
are created, read, changed and deleted there with Runway's field names. Redis keeps what the
server needs (``store.catalog``): each document's token count, the links in both directions
(``usedBy``), a cache of each avatar (name, image, status) and our own list order. The two
parts share one ``sync.CatalogSync`` (the upstream ↔ Redis sync) and so one lock and one limit.
"""

from __future__ import annotations

from ..models.documents import KNOWLEDGE_TOKEN_LIMIT
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
