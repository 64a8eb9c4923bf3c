"""The catalogue calls: avatars, knowledge documents and custom voices (Runway's fields, passed through).

Creates are non-idempotent (never retried after an ambiguous failure); reads, PATCHes and deletes
are retried like GETs (the same PATCH twice has the same result); a delete answers False when the
upstream says 404 (already gone).
"""

from __future__ import annotations

from typing import Any

from avatar_server.upstream.transport import Transport, item_path

AVATARS_PATH = "/v1/avatars"
DOCUMENTS_PATH = "/v1/documents"
VOICES_PATH = "/v1/voices"


class CatalogCalls(Transport):
    """The avatar, document and voice calls of ``UpstreamClient``."""

    # -- avatars -----------------------------------------------------------

    async def create_avatar(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/avatars`` → the avatar object. Never retried after an ambiguous failure."""
        return await self._create(AVATARS_PATH, body, "create_avatar")

    async def get_avatar(self, avatar_id: str) -> dict[str, Any]:
        return await self._object("GET", item_path(AVATARS_PATH, avatar_id), "get_avatar")

    async def list_avatars(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._page(AVATARS_PATH, "list_avatars", limit, cursor)

    async def update_avatar(self, avatar_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /v1/avatars/{id}`` (retried like GET: the same PATCH twice has the same result)."""
        return await self._object("PATCH", item_path(AVATARS_PATH, avatar_id), "update_avatar", json=body)

    async def delete_avatar(self, avatar_id: str) -> bool:
        """True if deleted, False if the upstream says 404 (already gone)."""
        return await self._delete(item_path(AVATARS_PATH, avatar_id), "delete_avatar")

    # -- knowledge documents -----------------------------------------------

    async def create_document(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/documents`` → the document object. Never retried after an ambiguous failure."""
        return await self._create(DOCUMENTS_PATH, body, "create_document")

    async def get_document(self, document_id: str) -> dict[str, Any]:
        return await self._object("GET", item_path(DOCUMENTS_PATH, document_id), "get_document")

    async def list_documents(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._page(DOCUMENTS_PATH, "list_documents", limit, cursor)

    async def update_document(self, document_id: str, body: dict[str, Any]) -> None:
        """``PATCH /v1/documents/{id}`` (name and/or content); Runway answers 204."""
        await self._send("PATCH", item_path(DOCUMENTS_PATH, document_id), op="update_document", json=body)

    async def delete_document(self, document_id: str) -> bool:
        """True if deleted (and detached from every avatar), False if the upstream says 404."""
        return await self._delete(item_path(DOCUMENTS_PATH, document_id), "delete_document")

    # -- custom voices -----------------------------------------------------

    async def create_voice(self, body: dict[str, Any]) -> str:
        """``POST /v1/voices`` → the new voice's id (PROCESSING). Never retried after an ambiguous failure."""
        return str((await self._create(VOICES_PATH, body, "voice_create"))["id"])

    async def get_voice(self, voice_id: str) -> dict[str, Any]:
        return await self._object("GET", item_path(VOICES_PATH, voice_id), "voice_get")

    async def list_voices(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._page(VOICES_PATH, "voice_list", limit, cursor)

    async def update_voice(self, voice_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /v1/voices/{id}`` (the name) → the voice."""
        return await self._object("PATCH", item_path(VOICES_PATH, voice_id), "voice_update", json=body)

    async def delete_voice(self, voice_id: str) -> bool:
        """True if deleted, False if the upstream says 404."""
        return await self._delete(item_path(VOICES_PATH, voice_id), "voice_delete")

    async def preview_voice(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/voices/preview`` → ``{url, durationSecs}`` (nothing is created: retried like a GET)."""
        return await self._object("POST", f"{VOICES_PATH}/preview", "voice_preview", json=body)
