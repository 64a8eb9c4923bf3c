"""Knowledge document models: request bodies with Runway's limits and the objects we
answer with. ``tokens`` is the server's own count (``catalog.tokens.count_tokens``),
taken when the content is written. No I/O here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from avatar_server.models.common import NoControls, RequestBody, ResponseModel, TextControls, Timestamp

KNOWLEDGE_TOKEN_LIMIT = 50_000
"""Most tokens of knowledge one avatar may have linked (summed over its documents)."""

DOCUMENT_NAME_MAX = 255
DOCUMENT_CONTENT_MAX = 200_000

DocumentName = Annotated[str, Field(min_length=1, max_length=DOCUMENT_NAME_MAX), NoControls]
DocumentContent = Annotated[str, Field(min_length=1, max_length=DOCUMENT_CONTENT_MAX), TextControls]
DocumentType = Literal["text", "file"]


class DocumentCreate(RequestBody):
    """Body of ``POST /v1/documents``."""

    name: DocumentName
    content: DocumentContent


class DocumentPatch(RequestBody):
    """Body of ``PATCH /v1/documents/{id}``: name and/or content; null is refused."""

    name: DocumentName | None = None
    content: DocumentContent | None = None

    @field_validator("name", "content", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("Input should not be null")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the client sent."""
        return self.model_dump(include=set(self.model_fields_set))


class DocumentUser(ResponseModel):
    """One avatar in a document's ``usedBy``."""

    id: str
    name: str
    imageUrl: str | None = None


class DocumentSummary(ResponseModel):
    """A document in a list page (no ``content``)."""

    id: str
    name: str
    type: DocumentType = "text"
    tokens: int
    usedBy: list[DocumentUser] = []
    createdAt: Timestamp
    updatedAt: Timestamp


class Document(DocumentSummary):
    """A document as ``GET /v1/documents/{id}`` answers."""

    content: str
