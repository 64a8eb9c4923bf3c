"""Custom voices (``/v1/voices``): Runway's bodies, validated before any upstream call, and the
voice object as the upstream answers it. No I/O here."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Discriminator, Field, Tag

from .common import NoControls, RequestBody, TextControls

VOICE_MODELS = ("eleven_ttv_v3", "eleven_multilingual_ttv_v2")
NAME_MAX = 100
DESCRIPTION_MAX = 1024
PROMPT_MIN, PROMPT_MAX = 20, 1000


def _audio(value: str) -> str:
    """An https URL naming a public host (never fetched by the server), a runway:// URI, or a
    base64 data URI of audio (within the request body limit)."""
    if value.startswith("https://"):
        if len(value) > 2048:
            raise ValueError("an https audio URL may be at most 2048 characters")
        host = urlsplit(value).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise ValueError("the audio URL must name a host, not an IP address")
        if "." not in host or host.endswith((".local", ".localhost", ".internal")) or host == "localhost":
            raise ValueError("the audio URL must name a public host")
        return value
    if value.startswith("runway://"):
        if len(value) > 5000:
            raise ValueError("a runway:// URI may be at most 5000 characters")
        return value
    if value.startswith("data:"):
        head, _, data = value.partition(",")
        if not head[5:].startswith("audio/") or not head.endswith(";base64"):
            raise ValueError("a data URI must be base64 audio (data:audio/...;base64,...)")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the data URI is not valid base64") from None
        return value
    raise ValueError("audio must be an https URL, a runway:// URI or a data:audio URI")


Prompt = Annotated[str, Field(min_length=PROMPT_MIN, max_length=PROMPT_MAX), TextControls]
Model = Literal["eleven_ttv_v3", "eleven_multilingual_ttv_v2"]


class VoiceFromText(RequestBody):
    type: Literal["text"]
    prompt: Prompt = Field(description="what the voice should sound like (20–1000 characters)")
    model: Model


class VoiceFromAudio(RequestBody):
    type: Literal["audio"]
    audio: Annotated[str, Field(min_length=13, max_length=16_777_216), AfterValidator(_audio)]


def _source_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"from/{kind}" if kind in ("text", "audio") else None


# Tags are not identifiers, so they never show in an error's field path ("from.prompt").
VoiceSource = Annotated[
    Annotated[VoiceFromText, Tag("from/text")] | Annotated[VoiceFromAudio, Tag("from/audio")],
    Discriminator(_source_tag, custom_error_type="union_tag_voice_source",
                  custom_error_message="Input should have type 'text' or 'audio'"),
]


class VoiceCreate(RequestBody):
    """Body of ``POST /v1/voices`` (Runway's fields)."""

    name: Annotated[str, Field(min_length=1, max_length=NAME_MAX), NoControls]
    description: Annotated[str, Field(min_length=1, max_length=DESCRIPTION_MAX), TextControls] | None = None
    from_: Annotated[VoiceSource, Field(alias="from")]

    def upstream_body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=False)


class VoicePatch(RequestBody):
    """Body of ``PATCH /v1/voices/{id}``: only the name changes."""

    name: Annotated[str, Field(min_length=1, max_length=NAME_MAX), NoControls]


class VoicePreviewRequest(RequestBody):
    """Body of ``POST /v1/voices/preview``."""

    prompt: Prompt
    model: Model


class VoiceObject(BaseModel):
    """A voice as the upstream answers it (status PROCESSING, READY with previewUrl, FAILED with
    failureReason)."""

    id: str
    name: str
    description: str | None
    createdAt: str
    status: Literal["PROCESSING", "READY", "FAILED"]
    previewUrl: str | None = None
    failureReason: str | None = None


class VoicePage(BaseModel):
    data: list[VoiceObject]
    hasMore: bool
    nextCursor: str | None


class VoicePreview(BaseModel):
    url: str = Field(description="where the sample can be fetched (the upstream's URL)")
    durationSecs: float
