"""The upstream ↔ Redis sync of the catalog: the one place that writes our records of avatars
and documents (``store.catalog``) in step with the upstream, where both live.

Every change of links or token counts runs under the catalog lock and in three steps
(``relink`` for links; ``documents.DocumentService.update`` for a document's content):

1. **reserve** — one Lua script checks the 50,000-token budget and applies the change in
   Redis (or refuses it with 422 ``knowledge_budget_exceeded``: nothing changes);
2. **upstream** — the same change is sent upstream;
3. **reconcile on failure** — if the upstream call fails, Redis is set to what the upstream
   now holds (read back with a GET: an ambiguous failure may have been applied), or, when
   even that read fails, back to what it was before (``reconcile_links``, ``reconcile_tokens``).

The lock serialises these changes across instances, so upstream PATCHes of one avatar's
``documentIds`` (which replace the whole list) never cross, and a rollback never undoes
someone else's change. The budget check itself is atomic in Redis, so even a lock lost to
its TTL could not let two links jointly pass the limit.

The ``known_*`` methods find a record, adopting what the upstream made without us (Runway
mode: the dashboard or the SDK). Callers hold the lock where a method says "under the lock".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import Conflict, NotFound, UpstreamStatusError, ValidationFailed
from ..runway import iso_ms_now
from ..store.catalog import CatalogLock, CatalogStore
from ..upstream import UpstreamClient
from .tokens import count_tokens
from .views import avatar_view, budget_error, image_url

log = logging.getLogger("avatar_server.catalog")


async def upstream_call(call: Awaitable[Any], kind: str, item_id: str) -> Any:
    """Await an upstream call; its 404 is ours (``<kind>_not_found``), its 409 a ``Conflict``."""
    try:
        return await call
    except NotFound:
        raise NotFound(f"no {kind} {item_id}", code=f"{kind}_not_found") from None
    except UpstreamStatusError as exc:
        if exc.upstream_status == 409:
            raise Conflict(f"the upstream refused the change: {exc.message}", code=f"{kind}_conflict") from None
        raise


# What an upstream refusal of a knowledge change says when it is about the knowledge limit (Runway
# does not publish its message; any 400/422 naming tokens, knowledge or a limit counts as one).
_BUDGET_REFUSAL = re.compile(r"token|knowledge|limit|exceed|too (?:large|long|big|much)", re.IGNORECASE)


def budget_refusal(exc: BaseException) -> str | None:
    """The upstream's message if ``exc`` is its refusal of a change for the knowledge limit, else None."""
    if isinstance(exc, UpstreamStatusError) and exc.upstream_status in (400, 413, 422) \
            and _BUDGET_REFUSAL.search(exc.message):
        return exc.message
    return None


async def undo_create_on_error(delete: Callable[[str], Awaitable[bool]], item_id: str,
                               step: Awaitable[None]) -> None:
    """Run the Redis step after an upstream create; if it fails, delete the upstream object."""
    try:
        await step
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(delete(item_id))
        raise


class CatalogSync:
    """Our Redis records of avatars and documents, written in step with the upstream."""

    def __init__(
        self, *, store: CatalogStore, lock: CatalogLock, upstream: UpstreamClient, limit: int
    ) -> None:
        self.store = store
        self.lock = lock
        self.upstream = upstream
        self.limit = limit

    async def relink(self, avatar_id: str, new: list[str], changes: dict[str, Any], *, field: str,
                     document_id: str | None = None) -> dict[str, Any]:
        """Under the lock: reserve the new links in Redis (budget checked), PATCH upstream, reconcile on error."""
        res = await self.store.set_links(avatar_id, new, limit=self.limit)
        if res.missing_index is not None:
            raise ValidationFailed(f"{field}: unknown document {new[res.missing_index]}",
                                   field=field if document_id else f"{field}.{res.missing_index}",
                                   code="document_not_found")
        if res.no_avatar:
            raise NotFound(f"no avatar {avatar_id}", code="avatar_not_found")
        if not res.applied:
            raise budget_error(avatar_id=avatar_id, current=res.current, document_tokens=res.adding,
                               limit=self.limit, field=field, document_id=document_id)
        try:
            up = await upstream_call(self.upstream.update_avatar(avatar_id, changes), "avatar", avatar_id)
        except BaseException as exc:
            await asyncio.shield(self.reconcile_links(avatar_id, list(res.old)))
            refusal = budget_refusal(exc)
            if refusal is not None:  # the upstream's verdict stands: the same 422, nothing changed
                raise budget_error(avatar_id=avatar_id, current=res.current, document_tokens=res.adding,
                                   limit=self.limit, field=field, document_id=document_id,
                                   upstream_message=refusal) from None
            raise
        await self.store.refresh_avatar(up, image_url(up))
        return avatar_view(up)

    async def reconcile_links(self, avatar_id: str, old: list[str]) -> None:
        """After a failed upstream PATCH: Redis takes what the upstream holds now, else what it held before."""
        try:
            up = await self.upstream.get_avatar(avatar_id)
            ids = [str(d) for d in up.get("documentIds") or []]
            known = await self.store.documents(ids)
            target = [d for d, rec in zip(ids, known, strict=True) if rec is not None]
            await self.store.refresh_avatar(up, image_url(up))
        except Exception:  # noqa: BLE001 - the upstream is failing: restore our last known state
            target = old
        res = await self.store.set_links(avatar_id, target, limit=None)
        log.info("knowledge links reconciled after an upstream error",
                 extra={"avatar_id": avatar_id, "applied": res.applied, "documents": len(target)})

    async def reconcile_tokens(self, document_id: str, content: str, tokens: int, old_tokens: int) -> None:
        """After a failed upstream content edit: the count of what the upstream holds now; when that
        cannot be read, the larger of the two counts (the edit may have landed)."""
        try:
            up = await self.upstream.get_document(document_id)
        except Exception:  # noqa: BLE001 - the upstream is failing: assume the worse case
            count = max(tokens, old_tokens)
        else:
            count = tokens if up.get("content") == content else old_tokens
        await self.store.set_tokens(document_id, count, limit=None)
        log.info("document tokens reconciled after an upstream error",
                 extra={"document_id": document_id, "kept_new": count == tokens})

    async def register_document(self, up: dict[str, Any], tokens: int) -> None:
        await self.store.put_document(up["id"], {
            "tokens": tokens, "name": up.get("name", ""), "type": up.get("type") or "text",
            "createdAt": up.get("createdAt") or iso_ms_now(), "updatedAt": up.get("updatedAt") or iso_ms_now()})

    async def register_avatar(self, up: dict[str, Any]) -> None:
        await self.store.put_avatar(up, image_url(up))

    async def adopt_avatar(self, up: dict[str, Any]) -> None:
        """An avatar made upstream without us (Runway mode): register it with the documents it uses."""
        async with self.lock.hold():
            if await self.store.avatar(up["id"]) is None:
                await self.adopt(up)

    async def adopt(self, up: dict[str, Any]) -> None:
        """Under the lock: register an upstream avatar and link the documents it uses (adopting them too)."""
        await self.register_avatar(up)
        ids: list[str] = []
        for doc_id in up.get("documentIds") or []:
            with contextlib.suppress(NotFound, ValidationFailed):
                await self.known_document(str(doc_id), field=None)
                ids.append(str(doc_id))
        await self.store.set_links(up["id"], ids, limit=None)

    async def known_avatar(self, avatar_id: str) -> dict[str, Any]:
        """Under the lock: the cached avatar, adopted from the upstream if we have not seen it (404 if it
        does not exist)."""
        cached = await self.store.avatar(avatar_id)
        if cached is not None:
            return cached
        up = await self.upstream_avatar(avatar_id)
        await self.adopt(up)
        return up

    async def known_document(self, document_id: str, *, field: str | None) -> dict[str, Any]:
        """The document's record, adopting it from the upstream if need be. Unknown: 422 naming ``field``
        (a body field), or 404 (a path parameter, ``field=None``)."""
        rec = await self.store.document(document_id)
        if rec is not None:
            return rec
        try:
            up = await self.upstream.get_document(document_id)
        except NotFound:
            if field is None:
                raise NotFound(f"no document {document_id}", code="document_not_found") from None
            raise ValidationFailed(f"{field}: no document {document_id}", field=field,
                                   code="document_not_found") from None
        await self.register_document(up, count_tokens(str(up.get("content", ""))))
        rec = await self.store.document(document_id)
        assert rec is not None
        return rec

    async def known_documents(self, ids: Iterable[str], *, field: str) -> list[dict[str, Any]]:
        return [await self.known_document(d, field=f"{field}.{i}") for i, d in enumerate(ids)]

    async def upstream_avatar(self, avatar_id: str) -> dict[str, Any]:
        return await upstream_call(self.upstream.get_avatar(avatar_id), "avatar", avatar_id)

    async def upstream_document(self, document_id: str) -> dict[str, Any]:
        return await upstream_call(self.upstream.get_document(document_id), "document", document_id)
