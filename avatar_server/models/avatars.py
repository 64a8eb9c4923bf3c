"""Avatar models: request bodies with Runway's limits, the avatar object we answer with,
the voice presets and the realtime session presets. No I/O here.

``referenceImage`` is only length-checked by the models; the full check (scheme, host,
resolved addresses, data URI content) is ``catalog.images.validate_reference_image``,
which the route awaits before any upstream call.

Avatar status (Runway's): ``PROCESSING ──► READY`` or ``PROCESSING ──► FAILED``; an
avatar whose image is replaced goes back to PROCESSING.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Discriminator, Field, Tag, field_validator, model_serializer

from avatar_server.models.common import NoControls, RequestBody, ResponseModel, TextControls, Timestamp, Uuid4
from avatar_server.runway import AvatarStatus

VoicePreset = Literal[
    "victoria", "vincent", "clara", "drew", "skye", "max", "morgan", "felix", "mia", "marcus",
    "summer", "ruby", "aurora", "jasper", "leo", "adrian", "nina", "emma", "blake", "david",
    "maya", "nathan", "sam", "georgia", "petra", "adam", "zach", "violet", "roman", "luna",
]  # fmt: skip
VOICE_PRESETS: tuple[str, ...] = get_args(VoicePreset)
"""Runway's 30 live voice presets, in Runway's order."""

SESSION_PRESETS: tuple[str, ...] = (
    "game-character",
    "music-superstar",
    "game-character-man",
    "cat-character",
    "influencer",
    "tennis-coach",
    "human-resource",
    "fashion-designer",
    "cooking-teacher",
)
"""Runway's 9 preset avatars usable directly in realtime sessions (``avatar.type = runway-preset``)."""

NAME_MAX = 50
PERSONALITY_MAX = 10_000
START_SCRIPT_MAX = 2_000
DOCUMENT_IDS_MAX = 50
REFERENCE_IMAGE_MIN = 13
REFERENCE_IMAGE_MAX = 5_242_880  # the longest accepted form (a data URI); URLs are shorter

AvatarName = Annotated[str, Field(min_length=1, max_length=NAME_MAX), NoControls]
Personality = Annotated[str, Field(min_length=1, max_length=PERSONALITY_MAX), TextControls]
StartScript = Annotated[str, Field(max_length=START_SCRIPT_MAX), TextControls]
ReferenceImage = Annotated[str, Field(min_length=REFERENCE_IMAGE_MIN, max_length=REFERENCE_IMAGE_MAX)]
ImageProcessing = Literal["optimize", "none"]
DocumentIds = Annotated[list[Uuid4], Field(max_length=DOCUMENT_IDS_MAX)]


class PresetVoice(RequestBody):
    type: Literal["runway-live-preset"]
    presetId: VoicePreset


class CustomVoice(RequestBody):
    type: Literal["custom"]
    id: Uuid4


def _voice_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"voice/{kind}" if kind in ("runway-live-preset", "custom") else None


# Tags are not identifiers, so they never show in an error's field path ("voice.id").
Voice = Annotated[
    Annotated[PresetVoice, Tag("voice/runway-live-preset")] | Annotated[CustomVoice, Tag("voice/custom")],
    Discriminator(
        _voice_tag,
        custom_error_type="union_tag_voice",
        custom_error_message="Input should have type 'runway-live-preset' or 'custom'",
    ),
]


def _unique(ids: list[str]) -> list[str]:
    if len(set(ids)) != len(ids):
        raise ValueError("Document ids must be unique")
    return ids


class AvatarCreate(RequestBody):
    """Body of ``POST /v1/avatars``."""

    name: AvatarName
    referenceImage: ReferenceImage
    personality: Personality
    voice: Voice
    startScript: StartScript | None = None
    documentIds: DocumentIds = []
    imageProcessing: ImageProcessing = "optimize"

    @field_validator("documentIds")
    @classmethod
    def _unique_ids(cls, value: list[str]) -> list[str]:
        return _unique(value)

    def upstream_body(self) -> dict[str, Any]:
        """The body as Runway's ``POST /v1/avatars`` takes it (``startScript`` only when given)."""
        return self.model_dump(mode="json", exclude_none=True)


_NOT_NULLABLE = ("name", "referenceImage", "personality", "voice", "documentIds", "imageProcessing")


class AvatarPatch(RequestBody):
    """Body of ``PATCH /v1/avatars/{id}``: every field optional.

    Absent and null differ only for ``startScript`` (null clears it); null for any other
    field is refused. ``documentIds`` replaces the whole list. Use ``changes()`` rather
    than reading attributes, which cannot tell "absent" from "null"."""

    name: AvatarName | None = None
    referenceImage: ReferenceImage | None = None
    personality: Personality | None = None
    voice: Voice | None = None
    startScript: StartScript | None = None
    documentIds: DocumentIds | None = None
    imageProcessing: ImageProcessing | None = None

    @field_validator(*_NOT_NULLABLE, mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("Input should not be null")
        return value

    @field_validator("documentIds")
    @classmethod
    def _unique_ids(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value)

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, camelCase, JSON-ready; ``{"startScript": None}`` means clear."""
        return self.model_dump(mode="json", include=set(self.model_fields_set))

    @property
    def clears_start_script(self) -> bool:
        return "startScript" in self.model_fields_set and self.startScript is None

    @property
    def changes_image(self) -> bool:
        return "referenceImage" in self.model_fields_set


class PresetVoiceInfo(ResponseModel):
    type: Literal["runway-live-preset"]
    presetId: str


class CustomVoiceInfo(ResponseModel):
    type: Literal["custom"]
    id: str


VoiceInfo = Annotated[PresetVoiceInfo | CustomVoiceInfo, Field(discriminator="type")]


class Avatar(ResponseModel):
    """An avatar as ``GET /v1/avatars/{id}`` answers. ``failureReason`` appears only when FAILED;
    every other nullable field is always present (Runway's convention)."""

    id: str
    name: str
    personality: str
    startScript: str | None = None
    voice: VoiceInfo
    referenceImageUri: str | None = None
    processedImageUri: str | None = None
    documentIds: list[str] = []
    createdAt: Timestamp
    updatedAt: Timestamp
    status: AvatarStatus
    failureReason: str | None = None

    @model_serializer(mode="wrap")
    def _failure_only_when_failed(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.status is not AvatarStatus.FAILED:
            data.pop("failureReason", None)
        elif data.get("failureReason") is None:
            data["failureReason"] = "Avatar processing failed"
        return data
