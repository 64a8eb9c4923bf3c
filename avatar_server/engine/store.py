"""The local engine's avatars and documents in Redis (Runway's ``/v1/avatars``, ``/v1/documents``).

The engine's own keys, all under ``as:engine:`` (the names the server's store used before the
engine had its own; a shared Redis keeps them apart from the server's ``as:…`` keys):

    engine:avatar:<id>              JSON record (documentIds included; timestamps in epoch ms)
    engine:avatar:<id>:image        the processed reference image (data URI) for the media peer
    engine:avatars                  sorted set, scores 0, members ``<createdAt ms>:<id>`` (lex = age)
    engine:document:<id>            JSON record, content included
    engine:document:<id>:usedby     set of the avatar ids linking the document
    engine:documents:createdAt      sorted set, members ``<createdAt ms>:<id>``
    engine:documents:updatedAt      sorted set, members ``<updatedAt ms>:<id>``

Every change touching more than one key is one optimistic transaction (WATCH the records it
reads, then MULTI/EXEC), so links and ``usedBy`` always agree: linking an avatar to a document
that is being deleted retries and then finds the document gone; deleting a document removes
it from every avatar's ``documentIds`` in the same transaction. Nothing here knows HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from avatar_server.store.connection import Redis
from avatar_server.store.lex_index import index_member, page
from avatar_server.store.optimistic import optimistic, watch_json

_RETRIES = 20
DOCUMENT_SORTS = ("createdAt", "updatedAt")

Record = dict[str, Any]
T = TypeVar("T")

ENGINE_PREFIX = "as:engine:"


# -- the engine's keys: every one is built here; nothing else spells one ---------------------------


def avatar_key(avatar_id: str) -> str:
    """String (JSON): an engine avatar record (documentIds included)."""
    return f"{ENGINE_PREFIX}avatar:{avatar_id}"


def avatar_image_key(avatar_id: str) -> str:
    """String: the avatar's processed reference image (a JPEG data URI) for the media peer."""
    return f"{ENGINE_PREFIX}avatar:{avatar_id}:image"


def avatars_index_key() -> str:
    """Sorted set (all scores 0): ``<createdAt ms, 15 digits>:<avatar id>``, listed by lex order."""
    return f"{ENGINE_PREFIX}avatars"


def document_key(document_id: str) -> str:
    """String (JSON): an engine document record, content included."""
    return f"{ENGINE_PREFIX}document:{document_id}"


def document_users_key(document_id: str) -> str:
    """Set: ids of the engine avatars whose documentIds include the document (``usedBy``)."""
    return f"{ENGINE_PREFIX}document:{document_id}:usedby"


def documents_index_key(sort: str) -> str:
    """Sorted set (all scores 0) per sort field (createdAt | updatedAt): ``<ms, 15 digits>:<document id>``."""
    return f"{ENGINE_PREFIX}documents:{sort}"


class CatalogBusy(Exception):
    """A record kept changing under a transaction (WATCH lost ``_RETRIES`` times)."""


class UnknownDocuments(Exception):
    """Some ``documentIds`` name no document; ``positions`` are their indexes in the list."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"unknown documents at {positions}")
        self.positions = positions


class EngineCatalogStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis

    # --- avatars ---------------------------------------------------------------------------
    async def get_avatar(self, avatar_id: str) -> Record | None:
        return (await self._records([avatar_key(avatar_id)]))[0]

    async def get_avatars(self, avatar_ids: Sequence[str]) -> list[Record | None]:
        return await self._records([avatar_key(i) for i in avatar_ids])

    async def avatar_image(self, avatar_id: str) -> str | None:
        return await self.r.get(avatar_image_key(avatar_id))

    async def create_avatar(self, record: Record, image: str | None) -> None:
        """Store a new avatar and its links; ``UnknownDocuments`` (nothing written) if a link dangles."""
        avatar_id = record["id"]
        doc_ids: list[str] = record["documentIds"]

        async def body(p: Any) -> None:
            await self._watch_documents(p, doc_ids)
            p.multi()
            p.set(avatar_key(avatar_id), json.dumps(record))
            if image is not None:
                p.set(avatar_image_key(avatar_id), image)
            p.zadd(avatars_index_key(), {index_member(record["createdAt"], avatar_id): 0})
            for doc_id in doc_ids:
                p.sadd(document_users_key(doc_id), avatar_id)
            await p.execute()

        await self._optimistic(avatar_id, body)

    async def update_avatar(
        self, avatar_id: str, change: Callable[[Record], Record], *, image: str | None = None,
        replace_image: bool = False,
    ) -> Record | None:
        """Apply ``change(old) → new`` atomically (it may raise to refuse); links follow ``documentIds``.

        ``replace_image``: set (or, with ``image=None``, delete) the stored image. None: no such avatar.
        """
        akey = avatar_key(avatar_id)

        async def body(p: Any) -> Record | None:
            old = await watch_json(p, akey)
            if old is None:
                return None
            new = change(dict(old))
            removed = [d for d in old["documentIds"] if d not in new["documentIds"]]
            added = [d for d in new["documentIds"] if d not in old["documentIds"]]
            await self._watch_documents(p, added, offset_of=new["documentIds"])
            p.multi()
            p.set(akey, json.dumps(new))
            if replace_image:
                if image is None:
                    p.delete(avatar_image_key(avatar_id))
                else:
                    p.set(avatar_image_key(avatar_id), image)
            for doc_id in removed:
                p.srem(document_users_key(doc_id), avatar_id)
            for doc_id in added:
                p.sadd(document_users_key(doc_id), avatar_id)
            await p.execute()
            return new

        return await self._optimistic(avatar_id, body)

    async def delete_avatar(self, avatar_id: str) -> bool:
        akey = avatar_key(avatar_id)

        async def body(p: Any) -> bool:
            old = await watch_json(p, akey)
            if old is None:
                return False
            p.multi()
            p.delete(akey, avatar_image_key(avatar_id))
            p.zrem(avatars_index_key(), index_member(old["createdAt"], avatar_id))
            for doc_id in old["documentIds"]:
                p.srem(document_users_key(doc_id), avatar_id)
            await p.execute()
            return True

        return await self._optimistic(avatar_id, body)

    async def list_avatars(
        self, *, limit: int, after: str | None, descending: bool
    ) -> tuple[list[Record], str | None]:
        return await self._page(avatars_index_key(), self.get_avatars, limit, after, descending)

    # --- documents -------------------------------------------------------------------------
    async def get_document(self, document_id: str) -> Record | None:
        return (await self._records([document_key(document_id)]))[0]

    async def get_documents(self, document_ids: Sequence[str]) -> list[Record | None]:
        return await self._records([document_key(i) for i in document_ids])

    async def document_users(self, document_id: str) -> list[str]:
        return sorted(await self.r.smembers(document_users_key(document_id)))

    async def create_document(self, record: Record) -> None:
        doc_id = record["id"]
        async with self.r.pipeline(transaction=True) as p:
            p.set(document_key(doc_id), json.dumps(record))
            p.zadd(documents_index_key("createdAt"), {index_member(record["createdAt"], doc_id): 0})
            p.zadd(documents_index_key("updatedAt"), {index_member(record["updatedAt"], doc_id): 0})
            await p.execute()

    async def update_document(self, document_id: str, change: Callable[[Record], Record]) -> Record | None:
        dkey = document_key(document_id)

        async def body(p: Any) -> Record | None:
            old = await watch_json(p, dkey)
            if old is None:
                return None
            new = change(dict(old))
            p.multi()
            p.set(dkey, json.dumps(new))
            updated = documents_index_key("updatedAt")
            p.zrem(updated, index_member(old["updatedAt"], document_id))
            p.zadd(updated, {index_member(new["updatedAt"], document_id): 0})
            await p.execute()
            return new

        return await self._optimistic(document_id, body)

    async def delete_document(self, document_id: str) -> bool:
        """Remove the document and detach it from every avatar (their ``documentIds``) at once."""
        dkey, ukey = document_key(document_id), document_users_key(document_id)

        async def body(p: Any) -> bool:
            await p.watch(dkey, ukey)
            raw = await p.get(dkey)
            if not raw:
                return False
            old = json.loads(raw)
            users = sorted(await p.smembers(ukey))
            avatar_keys = [avatar_key(a) for a in users]
            avatars: list[Any] = []
            if avatar_keys:
                await p.watch(*avatar_keys)
                avatars = await p.mget(avatar_keys)
            p.multi()
            for akey, araw in zip(avatar_keys, avatars, strict=True):
                if not araw:
                    continue
                avatar = json.loads(araw)
                avatar["documentIds"] = [d for d in avatar["documentIds"] if d != document_id]
                p.set(akey, json.dumps(avatar))
            p.delete(dkey, ukey)
            p.zrem(documents_index_key("createdAt"), index_member(old["createdAt"], document_id))
            p.zrem(documents_index_key("updatedAt"), index_member(old["updatedAt"], document_id))
            await p.execute()
            return True

        return await self._optimistic(document_id, body)

    async def list_documents(
        self, *, sort: str, limit: int, after: str | None, descending: bool
    ) -> tuple[list[Record], str | None]:
        assert sort in DOCUMENT_SORTS
        return await self._page(documents_index_key(sort), self.get_documents, limit, after, descending)

    # --- internals -------------------------------------------------------------------------
    async def _optimistic(self, record_id: str, body: Callable[[Any], Awaitable[T]]) -> T:
        """``body`` as one optimistic transaction; ``CatalogBusy(record_id)`` after ``_RETRIES`` lost
        WATCHes."""
        return await optimistic(self.r, body, busy=lambda: CatalogBusy(record_id), retries=_RETRIES)

    async def _records(self, record_keys: list[str]) -> list[Record | None]:
        """The JSON records at ``record_keys`` (None where there is none)."""
        if not record_keys:
            return []
        return [json.loads(raw) if raw else None for raw in await self.r.mget(record_keys)]

    async def _watch_documents(self, p: Any, doc_ids: Sequence[str], *, offset_of: Sequence[str] | None = None) -> None:
        """WATCH the documents (so a concurrent delete aborts us) and check they all exist."""
        if not doc_ids:
            return
        doc_keys = [document_key(d) for d in doc_ids]
        await p.watch(*doc_keys)
        exists = [bool(x) for x in await p.mget(doc_keys)]
        if not all(exists):
            order = list(offset_of if offset_of is not None else doc_ids)
            missing = {d for d, ok in zip(doc_ids, exists, strict=True) if not ok}
            await p.reset()
            raise UnknownDocuments([i for i, d in enumerate(order) if d in missing])

    async def _page(
        self, index: str, fetch: Callable[[Sequence[str]], Any], limit: int, after: str | None, descending: bool
    ) -> tuple[list[Record], str | None]:
        """One page of ``index`` after the member ``after`` (exclusive): stable under inserts and deletes."""
        ids, next_after = await page(self.r, index, limit, after, descending=descending)
        records = await fetch(ids)
        return [r for r in records if r], next_after
