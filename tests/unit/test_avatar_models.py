"""Avatar and document models: Runway's limits at their edges, PATCH semantics, output
shapes, and the 422 built from a pydantic error (field path, issues, no echoed input)."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from avatar_server.errors import ValidationFailed
from avatar_server.models.avatars import (
    SESSION_PRESETS,
    VOICE_PRESETS,
    Avatar,
    AvatarCreate,
    AvatarPatch,
    AvatarStatus,
)
from avatar_server.models.common import Page, validate_body, validation_error_from
from avatar_server.models.documents import (
    KNOWLEDGE_TOKEN_LIMIT,
    Document,
    DocumentCreate,
    DocumentPatch,
    DocumentSummary,
)

DOC_ID = "5b0c1d2e-3f4a-4b5c-8d6e-7f8091a2b3c4"
VOICE_ID = "0f1e2d3c-4b5a-4978-a6b5-c4d3e2f1a0b9"


def _avatar(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Ada",
        "referenceImage": "https://images.example.com/ada.png",
        "personality": "You are a helpful guide.",
        "voice": {"type": "runway-live-preset", "presetId": "adrian"},
    }
    body.update(over)
    return body


def _error(model: type[pydantic.BaseModel], data: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate_body(model, data)
    assert info.value.status == 422
    assert info.value.code == "validation_error"
    return info.value


# --------------------------------------------------------------------------- constants


def test_presets() -> None:
    assert len(VOICE_PRESETS) == 30 and len(set(VOICE_PRESETS)) == 30
    assert {"victoria", "adrian", "luna"} <= set(VOICE_PRESETS)
    assert len(SESSION_PRESETS) == 9 and "cat-character" in SESSION_PRESETS
    assert KNOWLEDGE_TOKEN_LIMIT == 50_000


# --------------------------------------------------------------------------- AvatarCreate


def test_create_minimal_defaults() -> None:
    body = validate_body(AvatarCreate, _avatar())
    assert body.imageProcessing == "optimize"
    assert body.documentIds == [] and body.startScript is None
    assert body.upstream_body() == {**_avatar(), "documentIds": [], "imageProcessing": "optimize"}


@pytest.mark.parametrize(
    ("field", "ok", "too_long"),
    [
        ("name", "n" * 50, "n" * 51),
        ("personality", "p" * 10_000, "p" * 10_001),
        ("startScript", "s" * 2_000, "s" * 2_001),
    ],
)
def test_create_length_edges(field: str, ok: str, too_long: str) -> None:
    assert getattr(validate_body(AvatarCreate, _avatar(**{field: ok})), field) == ok
    err = _error(AvatarCreate, _avatar(**{field: too_long}))
    assert err.field == field
    assert err.message.startswith(f"{field}: ")


@pytest.mark.parametrize("field", ["name", "personality"])
def test_create_empty_refused(field: str) -> None:
    assert _error(AvatarCreate, _avatar(**{field: ""})).field == field


def test_create_start_script_may_be_empty_or_null() -> None:
    assert validate_body(AvatarCreate, _avatar(startScript="")).startScript == ""
    assert validate_body(AvatarCreate, _avatar(startScript=None)).startScript is None


def test_create_missing_fields() -> None:
    err = _error(AvatarCreate, {})
    assert [i["field"] for i in err.detail["issues"]] == ["name", "referenceImage", "personality", "voice"]
    assert err.field == "name"


def test_reference_image_length_edges() -> None:
    assert _error(AvatarCreate, _avatar(referenceImage="https://a.b")).field == "referenceImage"
    assert (
        validate_body(AvatarCreate, _avatar(referenceImage="https://ab.cd")).referenceImage == "https://ab.cd"
    )


def test_document_ids_edges() -> None:
    ids = [f"5b0c1d2e-3f4a-4b5c-8d6e-{i:012x}" for i in range(51)]
    assert len(validate_body(AvatarCreate, _avatar(documentIds=ids[:50])).documentIds) == 50
    assert _error(AvatarCreate, _avatar(documentIds=ids)).field == "documentIds"
    err = _error(AvatarCreate, _avatar(documentIds=[DOC_ID, DOC_ID.upper()]))
    assert err.field == "documentIds" and "unique" in err.message
    err = _error(AvatarCreate, _avatar(documentIds=[DOC_ID, "not-a-uuid"]))
    assert err.field == "documentIds.1"
    # UUIDs are normalised to lower case.
    assert validate_body(AvatarCreate, _avatar(documentIds=[DOC_ID.upper()])).documentIds == [DOC_ID]


def test_voice_variants() -> None:
    for preset in VOICE_PRESETS:
        body = validate_body(AvatarCreate, _avatar(voice={"type": "runway-live-preset", "presetId": preset}))
        assert body.voice.presetId == preset
    custom = validate_body(AvatarCreate, _avatar(voice={"type": "custom", "id": VOICE_ID}))
    assert custom.voice.model_dump() == {"type": "custom", "id": VOICE_ID}


@pytest.mark.parametrize(
    ("voice", "field"),
    [
        ({"type": "runway-live-preset", "presetId": "nobody"}, "voice.presetId"),
        ({"type": "runway-live-preset"}, "voice.presetId"),
        ({"type": "custom", "id": "42"}, "voice.id"),
        ({"type": "custom", "id": VOICE_ID, "presetId": "adrian"}, "voice.presetId"),
        ({"type": "robot", "presetId": "adrian"}, "voice.type"),
        ({"presetId": "adrian"}, "voice.type"),
        ("adrian", "voice.type"),
    ],
)
def test_voice_errors_name_the_field(voice: Any, field: str) -> None:
    assert _error(AvatarCreate, _avatar(voice=voice)).field == field


def test_image_processing() -> None:
    assert validate_body(AvatarCreate, _avatar(imageProcessing="none")).imageProcessing == "none"
    assert _error(AvatarCreate, _avatar(imageProcessing="fast")).field == "imageProcessing"


def test_unknown_fields_refused() -> None:
    err = _error(AvatarCreate, _avatar(start_script="hi"))
    assert err.field == "start_script" and "Extra" in err.message


def test_wrong_types() -> None:
    assert _error(AvatarCreate, _avatar(name=42)).field == "name"
    assert _error(AvatarCreate, _avatar(documentIds="x")).field == "documentIds"
    assert _error(AvatarCreate, ["not", "an", "object"]).field is None


# --------------------------------------------------------------------------- the 422 itself


def test_error_lists_every_issue_and_never_echoes_input() -> None:
    huge = "data:image/png;base64," + "A" * 6_000_000
    with pytest.raises(pydantic.ValidationError) as info:
        AvatarCreate.model_validate(
            _avatar(name="x" * 51, referenceImage=huge, voice={"type": "custom", "id": "zz"})
        )
    err = validation_error_from(info.value)
    assert err.field == "name"
    assert err.message == "name: String should have at most 50 characters"
    assert [i["field"] for i in err.detail["issues"]] == ["name", "referenceImage", "voice.id"]
    body = json.dumps(err.to_body())
    assert "AAAA" not in body and "xxxx" not in body and "zz" not in body
    assert len(body) < 2_000
    assert err.to_body()["error"]["field"] == "name"


def test_unknown_voice_type_is_not_echoed() -> None:
    secret = "sk_live_" + "q" * 40
    err = _error(AvatarCreate, _avatar(voice={"type": secret}))
    assert secret not in json.dumps(err.to_body())


# --------------------------------------------------------------------------- AvatarPatch


def test_patch_absent_vs_null_start_script() -> None:
    cleared = validate_body(AvatarPatch, {"startScript": None})
    assert cleared.clears_start_script and cleared.changes() == {"startScript": None}
    untouched = validate_body(AvatarPatch, {"name": "Bo"})
    assert not untouched.clears_start_script and untouched.changes() == {"name": "Bo"}
    assert "startScript" not in untouched.changes()
    assert validate_body(AvatarPatch, {}).changes() == {}


@pytest.mark.parametrize(
    "field", ["name", "referenceImage", "personality", "voice", "documentIds", "imageProcessing"]
)
def test_patch_null_refused_except_start_script(field: str) -> None:
    err = _error(AvatarPatch, {field: None})
    assert err.field == field and "null" in err.message


def test_patch_limits_same_as_create() -> None:
    assert _error(AvatarPatch, {"name": "n" * 51}).field == "name"
    assert validate_body(AvatarPatch, {"name": "n" * 50}).changes() == {"name": "n" * 50}
    assert _error(AvatarPatch, {"startScript": "s" * 2_001}).field == "startScript"
    assert _error(AvatarPatch, {"documentIds": [DOC_ID, DOC_ID]}).field == "documentIds"
    assert _error(AvatarPatch, {"voice": {"type": "custom", "id": "1"}}).field == "voice.id"
    assert _error(AvatarPatch, {"colour": "red"}).field == "colour"


def test_patch_changes_are_json_ready() -> None:
    patch = validate_body(
        AvatarPatch, {"voice": {"type": "custom", "id": VOICE_ID.upper()}, "documentIds": []}
    )
    assert patch.changes() == {"voice": {"type": "custom", "id": VOICE_ID}, "documentIds": []}
    assert not patch.changes_image
    assert validate_body(AvatarPatch, {"referenceImage": "runway://abcdefgh"}).changes_image


# --------------------------------------------------------------------------- Avatar (output)


def _stored_avatar(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "11111111-2222-4333-8444-555555555555",
        "name": "Ada",
        "personality": "You are a helpful guide.",
        "startScript": None,
        "voice": {
            "type": "runway-live-preset",
            "presetId": "adrian",
            "name": "Adrian",
            "description": "calm",
        },
        "referenceImageUri": None,
        "processedImageUri": None,
        "documentIds": [DOC_ID],
        "createdAt": 1_738_326_896.789,
        "updatedAt": "2025-01-31T12:34:56.789Z",
        "status": "PROCESSING",
    }
    data.update(over)
    return data


def test_avatar_output_shape() -> None:
    out = Avatar.model_validate(_stored_avatar()).model_dump(mode="json")
    assert list(out) == [
        "id",
        "name",
        "personality",
        "startScript",
        "voice",
        "referenceImageUri",
        "processedImageUri",
        "documentIds",
        "createdAt",
        "updatedAt",
        "status",
    ]
    assert out["voice"] == {"type": "runway-live-preset", "presetId": "adrian"}  # upstream extras dropped
    assert out["createdAt"] == "2025-01-31T12:34:56.789Z" == out["updatedAt"]
    assert out["startScript"] is None and out["status"] == "PROCESSING"


def test_failure_reason_only_when_failed() -> None:
    ready = Avatar.model_validate(_stored_avatar(status="READY", failureReason="stale")).model_dump(
        mode="json"
    )
    assert "failureReason" not in ready
    failed = Avatar.model_validate(_stored_avatar(status="FAILED", failureReason="cannot decode image"))
    assert failed.model_dump(mode="json")["failureReason"] == "cannot decode image"
    assert Avatar.model_validate(_stored_avatar(status="FAILED")).model_dump(mode="json")["failureReason"]


def test_avatar_status_transitions() -> None:
    assert AvatarStatus.PROCESSING.can_become(AvatarStatus.READY)
    assert AvatarStatus.PROCESSING.can_become(AvatarStatus.FAILED)
    assert not AvatarStatus.READY.can_become(AvatarStatus.FAILED)
    assert AvatarStatus.READY.can_become(AvatarStatus.PROCESSING)


def test_page() -> None:
    avatar = Avatar.model_validate(_stored_avatar())
    page = Page[Avatar](data=[avatar], hasMore=True, nextCursor="abc").model_dump(mode="json")
    assert set(page) == {"data", "hasMore", "nextCursor"} and page["data"][0]["id"] == avatar.id
    last = Page[Avatar](data=[], hasMore=False).model_dump(mode="json")
    assert last == {"data": [], "hasMore": False, "nextCursor": None}


# --------------------------------------------------------------------------- documents


def test_document_create_edges() -> None:
    assert validate_body(DocumentCreate, {"name": "n" * 255, "content": "c" * 200_000}).name == "n" * 255
    assert _error(DocumentCreate, {"name": "n" * 256, "content": "c"}).field == "name"
    assert _error(DocumentCreate, {"name": "n", "content": "c" * 200_001}).field == "content"
    assert _error(DocumentCreate, {"name": "", "content": "c"}).field == "name"
    assert _error(DocumentCreate, {"name": "n", "content": ""}).field == "content"
    assert _error(DocumentCreate, {"name": "n"}).field == "content"
    assert _error(DocumentCreate, {"name": "n", "content": "c", "type": "file"}).field == "type"


def test_document_patch() -> None:
    assert validate_body(DocumentPatch, {"content": "new"}).changes() == {"content": "new"}
    assert validate_body(DocumentPatch, {}).changes() == {}
    assert _error(DocumentPatch, {"name": None}).field == "name"
    assert _error(DocumentPatch, {"content": "c" * 200_001}).field == "content"


def test_document_outputs() -> None:
    stored = {
        "id": DOC_ID,
        "name": "FAQ",
        "type": "text",
        "content": "# FAQ",
        "tokens": 9,
        "usedBy": [{"id": "11111111-2222-4333-8444-555555555555", "name": "Ada", "imageUrl": None}],
        "createdAt": 0,
        "updatedAt": 0,
    }
    full = Document.model_validate(stored).model_dump(mode="json")
    assert full["content"] == "# FAQ" and full["tokens"] == 9
    assert full["usedBy"] == [{"id": "11111111-2222-4333-8444-555555555555", "name": "Ada", "imageUrl": None}]
    assert full["createdAt"] == "1970-01-01T00:00:00.000Z"
    summary = DocumentSummary.model_validate(stored).model_dump(mode="json")
    assert "content" not in summary and summary["tokens"] == 9
