"""A credential in a query string never reaches a log line: the redaction patterns scrub
``key=``/``token=``/``access_token=`` values, and the extra fields of aiohttp's records (its access
log passes the raw request line, query included) are scrubbed as well (issue 15)."""

from __future__ import annotations

import logging

import pytest

from avatar_server.logs import install_redaction, redact

KEY = "pk_" + "A1b2C3d4" * 4


@pytest.mark.parametrize("text", [
    f"POST /v1/sessions/connect?key={KEY} HTTP/1.1",
    f"POST /v1/sessions/connect?transport=livekit&key={KEY}",
    "GET /v1/sites?key=opaque-admin-token-value&x=1",
    "GET /x?access_token=eyJopaque.value.here&api_key=zzzzzzzz",
])
def test_query_string_credentials_are_redacted(text: str) -> None:
    out = redact(text)
    assert "[redacted]" in out
    for secret in (KEY, "opaque-admin-token-value", "eyJopaque", "zzzzzzzz"):
        assert secret not in out, out


def test_ordinary_text_is_left_alone() -> None:
    for text in ("redis key: sessions:abc", "POST /v1/sessions/connect?transport=webrtc", "monkey=1"):
        assert redact(text) == text


def test_aiohttp_access_records_are_scrubbed_extra_fields_included(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    line = f"POST /v1/sessions/connect?key={KEY} HTTP/1.1"
    logging.getLogger("aiohttp.access").info("%s %s", "127.0.0.1", line, extra={"first_request_line": line})
    [record] = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert KEY not in record.getMessage() and KEY not in record.first_request_line
    assert "?key=[redacted]" in record.first_request_line
