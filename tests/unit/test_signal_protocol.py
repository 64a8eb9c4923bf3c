from __future__ import annotations

import json

import pytest

from avatar_server.models.signal import ProtocolError, credentials_message, dump, parse_client


@pytest.mark.parametrize("text,kind", [('{"type":"end"}', "end"), ('{"type":"ping","x":1}', "ping")])
def test_parse_client_messages(text: str, kind: str) -> None:
    assert parse_client(text).type == kind


@pytest.mark.parametrize(
    "raw,code",
    [
        ("not json", "invalid_json"),
        ("[1]", "invalid_message"),
        ('{"kind":"end"}', "invalid_message"),
        ('{"type":"credentials"}', "unknown_type"),
        (b"\x00\x01", "binary_not_supported"),
        ('{"type":"ping","pad":"' + "x" * 2000 + '"}', "message_too_large"),
    ],
)
def test_bad_client_messages_are_refused_with_a_code(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client(raw)
    assert err.value.code == code


def test_credentials_message_shape() -> None:
    msg = credentials_message(session_id="s", transport="webrtc", server_url="http://x/rtc/s", token="t",
                              room_name="r", ends_at="2026-01-01T00:00:00.000Z", max_duration=60)
    assert json.loads(dump(msg)) == {"type": "credentials", "sessionId": "s", "transport": "webrtc",
                                     "serverUrl": "http://x/rtc/s", "token": "t", "roomName": "r",
                                     "endsAt": "2026-01-01T00:00:00.000Z", "maxDuration": 60,
                                     "iceServers": []}
    stun = [{"urls": "stun:stun.example.com:3478"}]
    assert credentials_message(session_id="s", transport="webrtc", server_url="u", token="t", room_name="r",
                               ends_at=None, max_duration=60, ice_servers=stun)["iceServers"] == stun
    # LiveKit (Runway) brings its own ICE configuration: no iceServers field
    assert "iceServers" not in credentials_message(session_id="s", transport="livekit", server_url="wss://x",
                                                   token="t", room_name="r", ends_at=None, max_duration=60,
                                                   ice_servers=stun)
