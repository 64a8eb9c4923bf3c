"""Knowledge documents: created, read, changed and deleted upstream with Runway's field names;
their token counts, ``usedBy`` and our list order kept in Redis (``sync``, ``store.catalog``).

A new content is recounted and checked against the budget of every avatar using the document,
in the three steps of ``sync`` (reserve, upstream, reconcile on failure)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import NotFound, ValidationFailed
from ..models.documents import DocumentCreate, DocumentPatch
from ..runway import iso_ms_now
from .sync import CatalogSync, budget_refusal, undo_create_on_error, upstream_call
from .tokens import count_tokens
from .views import budget_error, document_summary_view, document_view, image_url, page_view


class DocumentService:
    def __init__(self, sync: CatalogSync) -> None:
        self.sync = sync
        self.store = sync.store
        self.lock = sync.lock
        self.upstream = sync.upstream
        self.limit = sync.limit

    async def create(self, body: DocumentCreate) -> dict[str, Any]:
        tokens = count_tokens(body.content)
        up = await self.upstream.create_document({"name": body.name, "content": body.content})
        await undo_create_on_error(self.upstream.delete_document, up["id"],
                                   self.sync.register_document(up, tokens))
        return document_view(up, tokens, [])

    async def get(self, document_id: str) -> dict[str, Any]:
        up = await self.sync.upstream_document(document_id)
        rec = await self.store.document(document_id)
        if rec is None:
            tokens = count_tokens(str(up.get("content", "")))
            await self.sync.register_document(up, tokens)
        else:
            tokens = rec["tokens"]
            await self.store.refresh_document(document_id, {"name": up.get("name", ""),
                                                            "updatedAt": up.get("updatedAt") or iso_ms_now()})
        users = (await self.store.users([document_id]))[document_id]
        return document_view(up, tokens, users)

    async def page(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page of the documents we know, in our order, from our records (no upstream call)."""
        ids, next_cursor = await self.store.page_documents(limit=limit, cursor=cursor)
        recs = [r for r in await self.store.documents(ids) if r is not None]
        users = await self.store.users(r["id"] for r in recs)
        data = [document_summary_view(r, users[r["id"]]) for r in recs]
        return page_view(data, next_cursor)

    async def update(self, document_id: str, patch: DocumentPatch) -> dict[str, Any]:
        changes = patch.changes()
        if not changes:
            raise ValidationFailed("body: send name and/or content", field="body")
        if "content" not in changes:
            await upstream_call(self.upstream.update_document(document_id, changes), "document", document_id)
            await self.store.refresh_document(document_id, {"name": changes["name"], "updatedAt": iso_ms_now()})
            return await self.get(document_id)
        tokens = count_tokens(changes["content"])
        async with self.lock.hold():
            await self.sync.known_document(document_id, field=None)
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
                await asyncio.shield(self.sync.reconcile_tokens(document_id, changes["content"], tokens,
                                                                res.old_tokens))
                refusal = budget_refusal(exc)
                if refusal is not None:  # the upstream's verdict stands: the same 422, nothing changed
                    raise budget_error(avatar_id=res.avatar_id, current=res.avatar_total or 0,
                                       document_tokens=tokens, limit=self.limit, field="content",
                                       document_id=document_id, upstream_message=refusal) from None
                raise
            fields = {"updatedAt": iso_ms_now(), **({"name": changes["name"]} if "name" in changes else {})}
            await self.store.refresh_document(document_id, fields)
        return await self.get(document_id)

    async def delete(self, document_id: str) -> None:
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
