"""The local engine's avatars and documents: Runway's ``/v1/avatars`` and ``/v1/documents``.

Records live in Redis (``engine.store``), so a restarted engine — or a second engine
on the same Redis — sees them. The HTTP face is ``engine.http.catalog``.

Avatar status (Runway's), checked by ``AvatarStatus.can_become``::

    PROCESSING ──avatar_processing_delay──▶ READY
        │                                     │ referenceImage replaced
        └──(image not decodable)──▶ FAILED ───┴──────────────▶ PROCESSING

The image is examined when it arrives (create, or PATCH of ``referenceImage``) and the outcome is
stored with the moment processing ends (``processingUntil``); the status is read from the clock.
So nothing runs in the background, and an engine restarted mid-processing needs no recovery.

Offline by design: an ``https://`` or ``runway://`` reference is never fetched. Such an avatar
becomes READY, its ``referenceImageUri`` is the URI as given, ``processedImageUri`` stays null and
the media peer draws a generated portrait. A ``data:image/...;base64,`` reference is decoded
(JPEG, PNG, WebP); if that fails the avatar becomes FAILED with a ``failureReason``.

Custom avatars in sessions: ``session_avatar(id)`` is the engine state's ``avatar_lookup`` (the
record plus the processed image the media peer draws), and ``CatalogKnowledge`` gives the peer
the avatar's linked documents as ``(name, content)`` passages.

Deleting an avatar does not end sessions already created for it (they hold their own copy).
The 50,000-token knowledge budget is not enforced here (Runway does not publish how it counts);
avatar_server enforces it before it calls any upstream.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from avatar_server.engine.catalog_bodies import (
    ListQuery,
    encode_cursor,
    validate_avatar_create,
    validate_avatar_patch,
    validate_document_create,
    validate_document_patch,
    voice_response,
)
from avatar_server.engine.config import EngineConfig
from avatar_server.engine.errors import EngineError
from avatar_server.engine.media.reference import ProcessedReference, process_reference
from avatar_server.engine.store import CatalogBusy, EngineCatalogStore, Record, UnknownDocuments
from avatar_server.runway import AvatarStatus, iso_ms  # Runway's avatar lifecycle, checked transitions


def _iso(ms: int) -> str:
    """Epoch milliseconds (how records keep time) as Runway writes a time."""
    return iso_ms(ms / 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


def avatar_status(record: Mapping[str, Any], now_ms: int | None = None) -> AvatarStatus:
    now = _now_ms() if now_ms is None else now_ms
    if now < record["processingUntil"]:
        return AvatarStatus.PROCESSING
    return AvatarStatus(record["outcome"])


class EngineCatalog:
    """Avatars and documents over a lazily obtained store (the Redis client exists only once the
    hosting application has started)."""

    def __init__(self, store: Callable[[], EngineCatalogStore], config: EngineConfig) -> None:
        self._store_factory = store
        self._store: EngineCatalogStore | None = None
        self.config = config
        self._rng = random.Random(config.seed)
        self._last_stamp = 0

    def _stamp(self) -> int:
        """``createdAt``/``updatedAt`` in ms, strictly increasing in this engine: lists sorted by them
        come out in the order of the writes, even for several writes in one millisecond."""
        self._last_stamp = max(_now_ms(), self._last_stamp + 1)
        return self._last_stamp

    @property
    def store(self) -> EngineCatalogStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    # --- avatars -------------------------------------------------------------------------------
    async def create_avatar(self, body: Any) -> dict[str, Any]:
        fields = validate_avatar_create(body)
        processed = await _process(fields["referenceImage"])
        now = self._stamp()
        record: Record = {
            "id": str(uuid.uuid4()),
            "name": fields["name"],
            "personality": fields["personality"],
            "startScript": fields["startScript"],
            "voice": fields["voice"],
            "documentIds": fields["documentIds"],
            "imageProcessing": fields["imageProcessing"],
            "createdAt": now,
            "updatedAt": now,
            **self._image_fields(processed, now),
        }
        try:
            await self.store.create_avatar(record, processed.processed)
        except UnknownDocuments as exc:
            raise _unknown_documents(exc) from None
        except CatalogBusy:
            raise _busy() from None
        return self.avatar_wire(record, now)

    async def get_avatar(self, avatar_id: str) -> dict[str, Any]:
        return self.avatar_wire(await self._avatar(avatar_id))

    async def update_avatar(self, avatar_id: str, body: Any) -> dict[str, Any]:
        fields = validate_avatar_patch(body)
        current = await self._avatar(avatar_id)
        processed: ProcessedReference | None = None
        if "referenceImage" in fields:
            self._check_image_change(current)
            processed = await _process(fields["referenceImage"])
        now = self._stamp()

        def change(old: Record) -> Record:
            new = {**old, **{k: v for k, v in fields.items() if k != "referenceImage"}, "updatedAt": now}
            if processed is not None:
                self._check_image_change(old)
                new.update(self._image_fields(processed, now))
            return new

        try:
            new = await self.store.update_avatar(
                avatar_id, change, image=processed.processed if processed else None,
                replace_image=processed is not None,
            )
        except UnknownDocuments as exc:
            raise _unknown_documents(exc) from None
        except CatalogBusy:
            raise _busy() from None
        if new is None:
            raise EngineError(404, "Avatar not found")
        return self.avatar_wire(new, now)

    async def delete_avatar(self, avatar_id: str) -> None:
        try:
            found = await self.store.delete_avatar(avatar_id)
        except CatalogBusy:
            raise _busy() from None
        if not found:
            raise EngineError(404, "Avatar not found")

    async def list_avatars(self, query: ListQuery) -> dict[str, Any]:
        records, last = await self.store.list_avatars(limit=query.limit, after=query.after,
                                                      descending=query.descending)
        now = _now_ms()
        return {"data": [self.avatar_wire(r, now) for r in records], "hasMore": last is not None,
                "nextCursor": encode_cursor(last, query) if last else None}

    def avatar_wire(self, record: Mapping[str, Any], now_ms: int | None = None) -> dict[str, Any]:
        """The avatar object exactly as Runway's schema has it for the current status."""
        status = avatar_status(record, now_ms)
        wire: dict[str, Any] = {
            "id": record["id"],
            "name": record["name"],
            "personality": record["personality"],
            "startScript": record["startScript"],
            "voice": voice_response(record["voice"]),
            "referenceImageUri": record["referenceImageUri"],
            "processedImageUri": record["processedImageUri"] if status is AvatarStatus.READY else None,
            "documentIds": list(record["documentIds"]),
            "createdAt": _iso(record["createdAt"]),
            "updatedAt": _iso(record["updatedAt"]),
            "status": status.value,
        }
        if status is AvatarStatus.FAILED:
            wire["failureReason"] = record["failureReason"] or "The avatar could not be processed"
        return wire

    def _image_fields(self, processed: ProcessedReference, now_ms: int) -> dict[str, Any]:
        delay = max(0.0, self.config.avatar_processing_delay.sample(self._rng))
        return {
            "referenceImageUri": processed.reference_preview,
            "processedImageUri": processed.processed_preview,
            "processingUntil": now_ms + int(delay * 1000),
            "outcome": (AvatarStatus.READY if processed.ok else AvatarStatus.FAILED).value,
            "failureReason": processed.failure_reason,
        }

    @staticmethod
    def _check_image_change(record: Mapping[str, Any]) -> None:
        status = avatar_status(record)
        if not status.can_become(AvatarStatus.PROCESSING):
            raise EngineError(409, "The avatar is still processing its current image; try again when it is "
                                   "READY or FAILED")

    async def _avatar(self, avatar_id: str) -> Record:
        record = await self.store.get_avatar(avatar_id) if _is_id(avatar_id) else None
        if record is None:
            raise EngineError(404, "Avatar not found")
        return record

    # --- sessions and media ------------------------------------------------------------------
    async def session_avatar(self, avatar_id: str) -> dict[str, Any] | None:
        """``EngineState``'s avatar lookup: the avatar object (status decides READY) plus, as
        ``processedImageUri``, the full processed image the media peer draws (None: generated face)."""
        record = await self.store.get_avatar(avatar_id.lower())
        if record is None:
            return None
        wire = self.avatar_wire(record)
        wire.pop("referenceImageUri")
        wire["processedImageUri"] = await self.store.avatar_image(record["id"])
        return wire

    async def knowledge_of(self, avatar_id: str, fallback_ids: list[str] | None = None) -> list[tuple[str, str]]:
        """The avatar's linked documents as ``(name, content)``, in ``documentIds`` order."""
        record = await self.store.get_avatar(avatar_id)
        doc_ids = record["documentIds"] if record is not None else list(fallback_ids or [])
        docs = await self.store.get_documents(doc_ids)
        return [(d["name"], d["content"]) for d in docs if d]

    # --- documents ----------------------------------------------------------------------------
    async def create_document(self, body: Any) -> dict[str, Any]:
        fields = validate_document_create(body)
        now = self._stamp()
        record: Record = {"id": str(uuid.uuid4()), "name": fields["name"], "type": "text",
                          "content": fields["content"], "createdAt": now, "updatedAt": now}
        await self.store.create_document(record)
        return await self._document_wire(record, with_content=True)

    async def get_document(self, document_id: str) -> dict[str, Any]:
        record = await self.store.get_document(document_id) if _is_id(document_id) else None
        if record is None:
            raise EngineError(404, "Document not found")
        return await self._document_wire(record, with_content=True)

    async def update_document(self, document_id: str, body: Any) -> None:
        fields = validate_document_patch(body)
        now = self._stamp()
        try:
            new = (await self.store.update_document(document_id, lambda old: {**old, **fields, "updatedAt": now})
                   if _is_id(document_id) else None)
        except CatalogBusy:
            raise _busy() from None
        if new is None:
            raise EngineError(404, "Document not found")

    async def delete_document(self, document_id: str) -> None:
        try:
            found = await self.store.delete_document(document_id) if _is_id(document_id) else False
        except CatalogBusy:
            raise _busy() from None
        if not found:
            raise EngineError(404, "Document not found")

    async def list_documents(self, query: ListQuery) -> dict[str, Any]:
        records, last = await self.store.list_documents(sort=query.sort, limit=query.limit, after=query.after,
                                                        descending=query.descending)
        data = await asyncio.gather(*(self._document_wire(r, with_content=False) for r in records))
        return {"data": list(data), "hasMore": last is not None,
                "nextCursor": encode_cursor(last, query) if last else None}

    async def _document_wire(self, record: Mapping[str, Any], *, with_content: bool) -> dict[str, Any]:
        users = await self.store.get_avatars(await self.store.document_users(record["id"]))
        now = _now_ms()
        used_by = [
            {"id": a["id"], "name": a["name"], "imageUrl": _image_url(a, now)}
            for a in sorted((a for a in users if a), key=lambda a: (a["createdAt"], a["id"]))
        ]
        wire: dict[str, Any] = {"id": record["id"], "name": record["name"], "type": record["type"],
                                "usedBy": used_by}
        if with_content:
            wire["content"] = record["content"]
        wire["createdAt"] = _iso(record["createdAt"])
        wire["updatedAt"] = _iso(record["updatedAt"])
        return wire


class CatalogKnowledge:
    """The media peer's ``KnowledgeSource``: a custom avatar's linked documents, read at each question
    (so documents edited or linked during a call count from the next question on)."""

    def __init__(self, catalog: EngineCatalog) -> None:
        self._catalog = catalog

    async def passages(self, avatar: dict[str, Any]) -> list[tuple[str, str]]:
        if avatar.get("type") != "custom":
            return []
        avatar_id = avatar.get("avatarId") or avatar.get("id")
        if not isinstance(avatar_id, str):
            return []
        fallback = avatar.get("documentIds")
        return await self._catalog.knowledge_of(avatar_id, fallback if isinstance(fallback, list) else None)


def _image_url(avatar: Mapping[str, Any], now_ms: int) -> str | None:
    if avatar_status(avatar, now_ms) is AvatarStatus.READY and avatar.get("processedImageUri"):
        return str(avatar["processedImageUri"])
    return avatar.get("referenceImageUri")


def _is_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def _process(uri: str) -> ProcessedReference:
    return await asyncio.get_running_loop().run_in_executor(None, process_reference, uri)


def _unknown_documents(exc: UnknownDocuments) -> EngineError:
    issues = [{"code": "custom", "path": ["documentIds", i], "message": "Document not found"}
              for i in exc.positions]
    return EngineError(400, f"Invalid request body: documentIds.{exc.positions[0]}: Document not found", issues)


def _busy() -> EngineError:
    return EngineError(409, "The record is being changed concurrently; try again")
