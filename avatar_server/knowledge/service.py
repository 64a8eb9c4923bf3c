"""Avatars and knowledge documents: one code path for both upstreams.

Avatars and documents live upstream (Runway, or the embedded engine over loopback HTTP);
they are created, read, changed and deleted there with Runway's field names. Redis keeps
what the server needs (``store.knowledge``): each document's token count, the links in
both directions (``usedBy``), a cache of each avatar (name, image, status) and our own
list order.

Every change of links or token counts runs under the knowledge lock and in three steps:

1. **reserve** — one Lua script checks the 50,000-token budget and applies the change in
   Redis (or refuses it with 422 ``knowledge_budget_exceeded``: nothing changes);
2. **upstream** — the same change is sent upstream;
3. **reconcile on failure** — if the upstream call fails, Redis is set to what the upstream
   now holds (read back with a GET: an ambiguous failure may have been applied), or, when
   even that read fails, back to what it was before.

The lock serialises these changes across instances, so upstream PATCHes of one avatar's
``documentIds`` (which replace the whole list) never cross, and a rollback never undoes
someone else's change. The budget check itself is atomic in Redis, so even a lock lost to
its TTL could not let two links jointly pass the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import AvatarServerError, Conflict, NotFound, ValidationFailed
from ..models.avatars import DOCUMENT_IDS_MAX, AvatarCreate, AvatarPatch
from ..models.documents import KNOWLEDGE_TOKEN_LIMIT, DocumentCreate, DocumentPatch, DocumentSummary
from ..models.sessions import EndReason, SessionStatus
from ..runway import AvatarStatus, iso_ms_now
from ..store.knowledge import KnowledgeLock, KnowledgeStore
from ..upstream import UpstreamClient
from .images import Resolver, validate_reference_image
from .records import KnowledgeRecords, budget_refusal, undo_create_on_error, upstream_call
from .tokens import count_tokens
from .views import avatar_view, budget_error, document_view, image_url

SessionsEnder = Callable[[str], Awaitable[int]]


def _in_upstream_order(avatar: dict[str, Any], linked: set[str]) -> list[str]:
    """The linked ids in the order the upstream lists them (any it does not list last, sorted)."""
    listed = [str(d) for d in avatar.get("documentIds") or [] if str(d) in linked]
    return listed + sorted(linked - set(listed))


class KnowledgeService:
    def __init__(
        self,
        *,
        store: KnowledgeStore,
        lock: KnowledgeLock,
        upstream: UpstreamClient,
        end_sessions: SessionsEnder | None = None,
        resolver: Resolver | None = None,
        limit: int = KNOWLEDGE_TOKEN_LIMIT,
    ) -> None:
        self.store = store
        self.lock = lock
        self.upstream = upstream
        self.end_sessions = end_sessions
        self.resolver = resolver  # None: the system resolver (tests swap in their own)
        self.limit = limit
        self.records = KnowledgeRecords(store=store, lock=lock, upstream=upstream, limit=limit)

    # ================================================================= documents
    async def create_document(self, body: DocumentCreate) -> dict[str, Any]:
        tokens = count_tokens(body.content)
        up = await self.upstream.create_document({"name": body.name, "content": body.content})
        await undo_create_on_error(self.upstream.delete_document, up["id"],
                                   self.records.register_document(up, tokens))
        return document_view(up, tokens, [])

    async def get_document(self, document_id: str) -> dict[str, Any]:
        up = await self.records.upstream_document(document_id)
        rec = await self.store.document(document_id)
        if rec is None:
            tokens = count_tokens(str(up.get("content", "")))
            await self.records.register_document(up, tokens)
        else:
            tokens = rec["tokens"]
            await self.store.refresh_document(document_id, {"name": up.get("name", ""),
                                                            "updatedAt": up.get("updatedAt") or iso_ms_now()})
        users = (await self.store.users([document_id]))[document_id]
        return document_view(up, tokens, users)

    async def list_documents(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        ids, next_cursor = await self.store.page_documents(limit=limit, cursor=cursor)
        recs = [r for r in await self.store.documents(ids) if r is not None]
        users = await self.store.users(r["id"] for r in recs)
        data = [DocumentSummary.model_validate({**r, "usedBy": users[r["id"]]}).model_dump(mode="json")
                for r in recs]
        return {"data": data, "hasMore": next_cursor is not None, "nextCursor": next_cursor}

    async def update_document(self, document_id: str, patch: DocumentPatch) -> dict[str, Any]:
        changes = patch.changes()
        if not changes:
            raise ValidationFailed("body: send name and/or content", field="body")
        if "content" not in changes:
            await upstream_call(self.upstream.update_document(document_id, changes), "document", document_id)
            await self.store.refresh_document(document_id, {"name": changes["name"], "updatedAt": iso_ms_now()})
            return await self.get_document(document_id)
        tokens = count_tokens(changes["content"])
        async with self.lock.hold():
            await self.records.known_document(document_id, field=None)
            res = await self.store.set_tokens(document_id, tokens, limit=self.limit)
            if res.no_document:  # deleted meanwhile (cannot happen under the lock, but stay safe)
                raise NotFound(f"no document {document_id}", code="document_not_found")
            if not res.applied:
                assert res.avatar_id is not None
                raise budget_error(avatar_id=res.avatar_id, current=res.avatar_total, document_tokens=tokens,
                                   limit=self.limit, field="content", document_id=document_id)
            try:
                await upstream_call(self.upstream.update_document(document_id, changes),
                                    "document", document_id)
            except BaseException as exc:
                await asyncio.shield(self.records.reconcile_tokens(document_id, changes["content"], tokens,
                                                                   res.old_tokens))
                refusal = budget_refusal(exc)
                if refusal is not None:  # the upstream's verdict stands: the same 422, nothing changed
                    raise budget_error(avatar_id=res.avatar_id, current=res.avatar_total or 0,
                                       document_tokens=tokens, limit=self.limit, field="content",
                                       document_id=document_id, upstream_message=refusal) from None
                raise
            fields = {"updatedAt": iso_ms_now(), **({"name": changes["name"]} if "name" in changes else {})}
            await self.store.refresh_document(document_id, fields)
        return await self.get_document(document_id)

    async def delete_document(self, document_id: str) -> None:
        """Delete upstream (which detaches it from every avatar), then forget it and its links."""
        async with self.lock.hold():
            known = await self.store.document(document_id) is not None
            deleted = await upstream_call(self.upstream.delete_document(document_id), "document", document_id)
            avatars = await self.store.delete_document(document_id)
            if not deleted and not known:
                raise NotFound(f"no document {document_id}", code="document_not_found")
            for avatar_id in avatars:  # keep the avatar cache in step with the upstream's detach
                cached = await self.store.avatar(avatar_id)
                if cached is not None:
                    cached["documentIds"] = [d for d in cached.get("documentIds", []) if d != document_id]
                    await self.store.refresh_avatar(cached, image_url(cached))

    # ================================================================= avatars
    async def create_avatar(self, body: AvatarCreate) -> dict[str, Any]:
        await validate_reference_image(body.referenceImage, resolver=self.resolver)
        if not body.documentIds:
            up = await self.upstream.create_avatar(body.upstream_body())
            await undo_create_on_error(self.upstream.delete_avatar, up["id"],
                                       self.records.register_avatar(up))
            return avatar_view(up)
        async with self.lock.hold():
            docs = await self.records.known_documents(body.documentIds, field="documentIds")
            total = sum(d["tokens"] for d in docs)
            if total > self.limit:
                raise budget_error(avatar_id=None, current=0, document_tokens=total, limit=self.limit,
                                   field="documentIds")
            up = await self.upstream.create_avatar(body.upstream_body())

            async def register() -> None:
                await self.records.register_avatar(up)
                res = await self.store.set_links(up["id"], body.documentIds, limit=self.limit)
                if not res.applied:  # cannot happen under the lock; never leave it half-made
                    raise Conflict("the avatar's documents changed while it was being created",
                                   code="knowledge_conflict")

            await undo_create_on_error(self.upstream.delete_avatar, up["id"], register())
            return avatar_view(up)

    async def get_avatar(self, avatar_id: str) -> dict[str, Any]:
        up = await self.records.upstream_avatar(avatar_id)
        if not await self.store.refresh_avatar(up, image_url(up)):
            await self.records.adopt_avatar(up)
        return avatar_view(up)

    async def list_avatars(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
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
        return {"data": data, "hasMore": next_cursor is not None, "nextCursor": next_cursor}

    async def update_avatar(self, avatar_id: str, patch: AvatarPatch) -> dict[str, Any]:
        changes = patch.changes()
        if patch.changes_image:
            assert patch.referenceImage is not None
            await validate_reference_image(patch.referenceImage, resolver=self.resolver)
        if not changes:
            return await self.get_avatar(avatar_id)
        if "documentIds" not in changes:
            up = await upstream_call(self.upstream.update_avatar(avatar_id, changes), "avatar", avatar_id)
            if not await self.store.refresh_avatar(up, image_url(up)):
                await self.records.adopt_avatar(up)
            return avatar_view(up)
        async with self.lock.hold():
            await self.records.known_avatar(avatar_id)
            await self.records.known_documents(changes["documentIds"], field="documentIds")
            return await self.records.relink(avatar_id, changes["documentIds"], changes, field="documentIds")

    async def link(self, avatar_id: str, document_id: str) -> dict[str, Any]:
        async with self.lock.hold():
            cached = await self.records.known_avatar(avatar_id)
            await self.records.known_document(document_id, field=None)
            linked = await self.store.linked(avatar_id)
            order = _in_upstream_order(cached, linked)
            if document_id in linked:
                return avatar_view(cached)
            if len(order) >= DOCUMENT_IDS_MAX:
                raise ValidationFailed(f"documentId: an avatar may have at most {DOCUMENT_IDS_MAX} documents",
                                       field="documentId", code="too_many_documents", limit=DOCUMENT_IDS_MAX)
            new = [*order, document_id]
            return await self.records.relink(avatar_id, new, {"documentIds": new}, field="documentId",
                                             document_id=document_id)

    async def unlink(self, avatar_id: str, document_id: str) -> dict[str, Any]:
        async with self.lock.hold():
            cached = await self.records.known_avatar(avatar_id)
            if await self.store.document(document_id) is None:
                raise NotFound(f"no document {document_id}", code="document_not_found")
            linked = await self.store.linked(avatar_id)
            if document_id not in linked:
                return avatar_view(cached)  # already unlinked: nothing to do
            new = [d for d in _in_upstream_order(cached, linked) if d != document_id]
            return await self.records.relink(avatar_id, new, {"documentIds": new}, field="documentId")

    async def delete_avatar(self, avatar_id: str) -> int:
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

    # ================================================================= sessions
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
