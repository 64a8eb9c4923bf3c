"""What the avatar and document routes answer, serialised through our models: Runway-shaped
views of the upstream's objects, our document records in list pages, the page envelope, the
picture ``usedBy`` shows, and the 422 of the token budget."""

from __future__ import annotations

from typing import Any

import pydantic

from ..errors import UpstreamError, ValidationFailed
from ..models.avatars import Avatar
from ..models.common import Page
from ..models.documents import Document, DocumentSummary


def budget_error(*, avatar_id: str | None, current: int, document_tokens: int, limit: int, field: str,
                 document_id: str | None = None, upstream_message: str | None = None) -> ValidationFailed:
    """422 ``knowledge_budget_exceeded``; with ``upstream_message`` when it is the upstream that refused
    (our count let the change through: the upstream's verdict stands)."""
    what = f"document {document_id}" if document_id else "the documents being linked"
    message = (f"{field}: {f'avatar {avatar_id}' if avatar_id else 'the new avatar'} has {current} tokens of "
               f"knowledge; {what} would add {document_tokens}, passing the limit of {limit}")
    extra: dict[str, Any] = {}
    if upstream_message is not None:
        message = (f"{field}: the upstream refused the change for its knowledge limit ({upstream_message}); "
                   f"by our count {f'avatar {avatar_id} has {current} tokens and ' if avatar_id else ''}{what} "
                   f"would add {document_tokens} (our limit: {limit})")
        extra["upstreamMessage"] = upstream_message
    return ValidationFailed(
        message, field=field, code="knowledge_budget_exceeded", avatarId=avatar_id, documentId=document_id,
        currentTokens=current, documentTokens=document_tokens, limit=limit, **extra,
    )


IMAGE_URL_MAX = 65_536  # a preview data: URI larger than this is left out of usedBy


def image_url(avatar: dict[str, Any]) -> str | None:
    """The avatar's picture for ``usedBy``: the processed image, else the reference preview — an
    http(s) URL, or a small ``data:image/`` preview (the local engine's)."""
    for key in ("processedImageUri", "referenceImageUri"):
        value = avatar.get(key)
        if not isinstance(value, str):
            continue
        if value.startswith(("https://", "http://")) and len(value) <= 2048:
            return value
        if value.startswith("data:image/") and len(value) <= IMAGE_URL_MAX:
            return value
    return None


def avatar_view(raw: dict[str, Any]) -> dict[str, Any]:
    """An upstream avatar object as we answer it (``Avatar``)."""
    try:
        return Avatar.model_validate(raw).model_dump(mode="json")
    except pydantic.ValidationError:
        raise UpstreamError("the upstream answered an avatar we cannot read", code="upstream_malformed") from None


def document_view(up: dict[str, Any], tokens: int, users: list[dict[str, Any]]) -> dict[str, Any]:
    """An upstream document object with our token count and ``usedBy`` (``Document``)."""
    try:
        doc = Document.model_validate({**up, "type": up.get("type") or "text", "tokens": tokens,
                                       "usedBy": users})
    except pydantic.ValidationError:
        raise UpstreamError("the upstream answered a document we cannot read",
                            code="upstream_malformed") from None
    return doc.model_dump(mode="json")


def document_summary_view(record: dict[str, Any], users: list[dict[str, Any]]) -> dict[str, Any]:
    """Our record of a document, with its ``usedBy``, as a list page shows it (``DocumentSummary``)."""
    return DocumentSummary.model_validate({**record, "usedBy": users}).model_dump(mode="json")


def page_view(data: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    """One page of a list (``Page``): ``{data, hasMore, nextCursor}``, ``nextCursor`` null on the last."""
    page = Page[dict[str, Any]](data=data, hasMore=next_cursor is not None, nextCursor=next_cursor)
    return page.model_dump(mode="json")
