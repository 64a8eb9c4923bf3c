"""Avatars: created, read, changed and deleted upstream with Runway's field names; cached in
Redis with their links (``sync``, ``store.catalog``). A reference image is checked
(``images``) before anything is sent upstream; a change of links runs in the three steps of
``sync.CatalogSync.relink`` under the catalog lock. Deleting an avatar ends its live sessions
(``end_sessions``, given by the app)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import AvatarServerError, Conflict, NotFound, ValidationFailed
from ..models.avatars import DOCUMENT_IDS_MAX, AvatarCreate, AvatarPatch
from ..runway import AvatarStatus
from .images import Resolver, validate_reference_image
from .sync import CatalogSync, undo_create_on_error, upstream_call
from .views import avatar_view, budget_error, image_url, page_view

SessionsEnder = Callable[[str], Awaitable[int]]


def _in_upstream_order(avatar: dict[str, Any], linked: set[str]) -> list[str]:
    """The linked ids in the order the upstream lists them (any it does not list last, sorted)."""
    listed = [str(d) for d in avatar.get("documentIds") or [] if str(d) in linked]
    return listed + sorted(linked - set(listed))


class AvatarService:
    def __init__(
        self, sync: CatalogSync, *, end_sessions: SessionsEnder | None = None, resolver: Resolver | None = None
    ) -> None:
        self.sync = sync
        self.store = sync.store
        self.lock = sync.lock
        self.upstream = sync.upstream
        self.limit = sync.limit
        self.end_sessions = end_sessions
        self.resolver = resolver  # None: the system resolver (tests swap in their own)

    async def create(self, body: AvatarCreate) -> dict[str, Any]:
        await validate_reference_image(body.referenceImage, resolver=self.resolver)
        if not body.documentIds:
            up = await self.upstream.create_avatar(body.upstream_body())
            await undo_create_on_error(self.upstream.delete_avatar, up["id"],
                                       self.sync.register_avatar(up))
            return avatar_view(up)
        async with self.lock.hold():
            docs = await self.sync.known_documents(body.documentIds, field="documentIds")
            total = sum(d["tokens"] for d in docs)
            if total > self.limit:
                raise budget_error(avatar_id=None, current=0, document_tokens=total, limit=self.limit,
                                   field="documentIds")
            up = await self.upstream.create_avatar(body.upstream_body())

            async def register() -> None:
                await self.sync.register_avatar(up)
                res = await self.store.set_links(up["id"], body.documentIds, limit=self.limit)
                if not res.applied:  # cannot happen under the lock; never leave it half-made
                    raise Conflict("the avatar's documents changed while it was being created",
                                   code="knowledge_conflict")

            await undo_create_on_error(self.upstream.delete_avatar, up["id"], register())
            return avatar_view(up)

    async def get(self, avatar_id: str) -> dict[str, Any]:
        up = await self.sync.upstream_avatar(avatar_id)
        if not await self.store.refresh_avatar(up, image_url(up)):
            await self.sync.adopt_avatar(up)
        return avatar_view(up)

    async def page(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        ids, next_cursor = await self.store.page_avatars(limit=limit, cursor=cursor)
        cached = await self.store.avatars(ids)

        async def fresh(avatar_id: str, raw: dict[str, Any] | None) -> dict[str, Any] | None:
            if raw is not None and raw.get("status") != AvatarStatus.PROCESSING:
                return raw  # settled avatars change only through us, and we refresh on every change
            try:
                up = await self.upstream.get_avatar(avatar_id)
            except NotFound:
                await self.store.delete_avatar(avatar_id)  # gone upstream: forget it too
                return None
            except AvatarServerError:
                return raw
            await self.store.refresh_avatar(up, image_url(up))
            return up

        rows = await asyncio.gather(*(fresh(i, raw) for i, raw in zip(ids, cached, strict=True)))
        data = [avatar_view(r) for r in rows if r is not None]
        return page_view(data, next_cursor)

    async def update(self, avatar_id: str, patch: AvatarPatch) -> dict[str, Any]:
        changes = patch.changes()
        if patch.changes_image:
            assert patch.referenceImage is not None
            await validate_reference_image(patch.referenceImage, resolver=self.resolver)
        if not changes:
            return await self.get(avatar_id)
        if "documentIds" not in changes:
            up = await upstream_call(self.upstream.update_avatar(avatar_id, changes), "avatar", avatar_id)
            if not await self.store.refresh_avatar(up, image_url(up)):
                await self.sync.adopt_avatar(up)
            return avatar_view(up)
        async with self.lock.hold():
            await self.sync.known_avatar(avatar_id)
            await self.sync.known_documents(changes["documentIds"], field="documentIds")
            return await self.sync.relink(avatar_id, changes["documentIds"], changes, field="documentIds")

    async def link(self, avatar_id: str, document_id: str) -> dict[str, Any]:
        async with self.lock.hold():
            cached = await self.sync.known_avatar(avatar_id)
            await self.sync.known_document(document_id, field=None)
            linked = await self.store.linked(avatar_id)
            order = _in_upstream_order(cached, linked)
            if document_id in linked:
                return avatar_view(cached)
            if len(order) >= DOCUMENT_IDS_MAX:
                raise ValidationFailed(f"documentId: an avatar may have at most {DOCUMENT_IDS_MAX} documents",
                                       field="documentId", code="too_many_documents", limit=DOCUMENT_IDS_MAX)
            new = [*order, document_id]
            return await self.sync.relink(avatar_id, new, {"documentIds": new}, field="documentId",
                                             document_id=document_id)

    async def unlink(self, avatar_id: str, document_id: str) -> dict[str, Any]:
        async with self.lock.hold():
            cached = await self.sync.known_avatar(avatar_id)
            if await self.store.document(document_id) is None:
                raise NotFound(f"no document {document_id}", code="document_not_found")
            linked = await self.store.linked(avatar_id)
            if document_id not in linked:
                return avatar_view(cached)  # already unlinked: nothing to do
            new = [d for d in _in_upstream_order(cached, linked) if d != document_id]
            return await self.sync.relink(avatar_id, new, {"documentIds": new}, field="documentId")

    async def delete(self, avatar_id: str) -> int:
        """Delete the avatar upstream, forget it and its links, then end its live sessions (reason
        ``admin``). Returns how many sessions were ended. When the upstream refuses or fails the
        delete, nothing changes: the avatar and its sessions live on."""
        async with self.lock.hold():
            known = await self.store.avatar(avatar_id) is not None
            deleted = await upstream_call(self.upstream.delete_avatar(avatar_id), "avatar", avatar_id)
            await self.store.delete_avatar(avatar_id)
            if not deleted and not known:
                raise NotFound(f"no avatar {avatar_id}", code="avatar_not_found")
            return await self.end_sessions(avatar_id) if self.end_sessions else 0

    async def check_session_avatar(self, avatar: dict[str, Any]) -> None:
        """Before a session is created: a custom avatar must exist and be READY (409 ``avatar_not_ready``)."""
        if avatar.get("type") != "custom":
            return
        avatar_id = str(avatar.get("avatarId", "")).lower()
        if await self.store.avatar_status(avatar_id) == AvatarStatus.READY:
            return
        try:
            up = await self.upstream.get_avatar(avatar_id)
        except NotFound:
            raise NotFound(f"avatar.avatarId: no avatar {avatar_id}", code="avatar_not_found",
                           field="avatar.avatarId") from None
        await self.store.refresh_avatar(up, image_url(up))
        status = up.get("status")
        if status != AvatarStatus.READY:
            raise Conflict(f"avatar {avatar_id} is {status}; a session needs a READY avatar",
                           code="avatar_not_ready", avatarId=avatar_id, status=status,
                           failureReason=up.get("failureReason"))

    async def names(self, avatar_ids: list[str]) -> dict[str, str]:
        """The cached names of these avatars, for those we know and that have one (no upstream call)."""
        cached = await self.store.avatars(avatar_ids)
        return {a: rec["name"] for a, rec in zip(avatar_ids, cached, strict=True) if rec and rec.get("name")}
