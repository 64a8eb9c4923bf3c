"""Units of the engine catalog: status from the clock, transitions, cursors, image processing, settings."""

from __future__ import annotations

import base64

import pytest

from avatar_server.engine.catalog import avatar_status
from avatar_server.engine.catalog_bodies import (
    ListQuery,
    decode_cursor,
    encode_cursor,
    parse_list_query,
    validate_avatar_create,
    validate_avatar_patch,
    validate_document_create,
    validate_document_patch,
)
from avatar_server.engine.config import Delay, EngineConfig
from avatar_server.engine.errors import EngineConfigError, EngineError
from avatar_server.engine.media.reference import process_reference
from avatar_server.runway import AvatarStatus
from avatar_server.store.lex_index import index_member, is_index_member
from tests.catalog_helpers import mean_rgb, png_uri


def test_status_is_read_from_the_clock() -> None:
    record = {"processingUntil": 10_000, "outcome": "FAILED"}
    assert avatar_status(record, 9_999) is AvatarStatus.PROCESSING
    assert avatar_status(record, 10_000) is AvatarStatus.FAILED
    assert avatar_status({**record, "outcome": "READY"}, 20_000) is AvatarStatus.READY


def test_avatar_transitions() -> None:
    assert AvatarStatus.PROCESSING.can_become(AvatarStatus.READY)
    assert AvatarStatus.PROCESSING.can_become(AvatarStatus.FAILED)
    assert not AvatarStatus.PROCESSING.can_become(AvatarStatus.PROCESSING)  # image change while processing
    assert AvatarStatus.READY.can_become(AvatarStatus.PROCESSING)
    assert AvatarStatus.FAILED.can_become(AvatarStatus.PROCESSING)
    assert not AvatarStatus.READY.can_become(AvatarStatus.FAILED)


def test_cursor_round_trip_and_refusals() -> None:
    member = index_member(1_700_000_000_123, "0b6c2a4e-5d1b-4c7e-9a8f-1234567890ab")
    assert is_index_member(member) and not is_index_member("17:abc") and not is_index_member("x" * 20)
    query = ListQuery(limit=5, after=None, sort="updatedAt", descending=False)
    cursor = encode_cursor(member, query)
    assert decode_cursor(cursor) == {"m": member, "s": "updatedAt", "o": "asc"}
    parsed = parse_list_query({"cursor": cursor, "sort": "updatedAt", "order": "asc", "limit": "5"},
                              documents=True, member_ok=is_index_member)
    assert parsed == ListQuery(limit=5, after=member, sort="updatedAt", descending=False)
    for query_args in ({"cursor": cursor}, {"cursor": "!!"}, {"limit": "101"}, {"limit": "-1"}, {"order": "x"}):
        with pytest.raises(EngineError) as refused:
            parse_list_query(query_args, documents=True, member_ok=is_index_member)
        assert refused.value.status == 400 and refused.value.issues
    forged = base64.urlsafe_b64encode(b'{"m":"../x","s":"createdAt","o":"desc"}').decode()
    with pytest.raises(EngineError):
        parse_list_query({"cursor": forged}, documents=False, member_ok=is_index_member)


def test_reference_processing() -> None:
    url = "https://example.com/face.png"
    assert process_reference(url).ok and process_reference(url).reference_preview == url
    assert process_reference(url).processed is None  # never fetched
    bad = process_reference("data:image/webp;base64," + base64.b64encode(b"RIFF....WEBPjunk").decode())
    assert not bad.ok and bad.failure_reason
    good = process_reference(png_uri((10, 20, 220), (300, 100)))
    assert good.ok and good.processed and good.processed_preview and good.reference_preview
    r, g, b = mean_rgb(good.processed)
    assert b > 180 and r < 60
    assert len(good.reference_preview) < len(good.processed)


def test_avatar_delay_setting() -> None:
    assert EngineConfig().avatar_processing_delay == Delay("uniform", 1.0, 2.0)
    config = EngineConfig.from_env({"AVATAR_ENGINE_AVATAR_DELAY": "fixed:0.2"})
    assert config.avatar_processing_delay == Delay("fixed", 0.2)
    assert config.to_json()["avatarProcessingDelay"] == "fixed:0.2"
    with pytest.raises(EngineConfigError, match="AVATAR_ENGINE_AVATAR_DELAY"):
        EngineConfig.from_env({"AVATAR_ENGINE_AVATAR_DELAY": "soon"})


def test_body_refusals_name_every_issue() -> None:
    for validate in (validate_avatar_create, validate_avatar_patch, validate_document_create,
                     validate_document_patch):
        with pytest.raises(EngineError, match="expected a JSON object") as caught:
            validate(["not", "an", "object"])
        assert caught.value.status == 400
    with pytest.raises(EngineError) as caught:
        validate_document_create({"name": ""})
    assert [(i["code"], i["path"]) for i in caught.value.issues] == [("invalid_type", ["content"]),
                                                                    ("too_small", ["name"])]
    with pytest.raises(EngineError) as caught:
        validate_avatar_create({"name": "a"})
    missing = {tuple(i["path"]) for i in caught.value.issues}
    assert missing == {("referenceImage",), ("personality",), ("voice",)}
    for validate in (validate_avatar_patch, validate_document_patch):
        with pytest.raises(EngineError, match="at least one") as caught:
            validate({"unknown": 1})
        assert caught.value.issues == [{"code": "custom", "path": [],
                                        "message": "At least one field must be provided"}]
    assert validate_document_patch({"content": "c"}) == {"content": "c"}
    assert validate_avatar_patch({"startScript": None}) == {"startScript": None}
