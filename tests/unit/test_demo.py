"""The demo's setting and the origins its site allows (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar_server.demo import demo_origins, preset_name
from avatar_server.errors import ConfigError
from avatar_server.settings import Settings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),  # engine mode: on
        ({"RUNWAYML_API_SECRET": "key_123"}, False),  # Runway mode: off unless set
        ({"RUNWAYML_API_SECRET": "key_123", "AVATAR_SERVER_DEMO": "on"}, True),
        ({"AVATAR_SERVER_DEMO": "0"}, False),
        ({"AVATAR_SERVER_DEMO": " TRUE "}, True),
        ({"AVATAR_SERVER_DEMO": ""}, True),
    ],
)
def test_demo_setting(env: dict[str, str], expected: bool) -> None:
    assert Settings.from_env(env).demo is expected


def test_bad_demo_setting_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match="AVATAR_SERVER_DEMO='maybe' must be on or off"):
        Settings.from_env({"AVATAR_SERVER_DEMO": "maybe"})


def test_origins_of_a_loopback_server_cover_its_spellings() -> None:
    s = Settings(host="127.0.0.1", port=8080, data_dir=Path("x"))
    assert demo_origins(s) == ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
    s = Settings(host="0.0.0.0", port=9000, data_dir=Path("x"))
    assert demo_origins(s)[0] == "http://127.0.0.1:9000" and "http://localhost:9000" in demo_origins(s)


def test_origins_follow_the_public_url() -> None:
    s = Settings(host="0.0.0.0", port=8080, public_url="https://Avatars.Example.com:443/base", data_dir=Path("x"))
    assert demo_origins(s) == ["https://avatars.example.com"]


def test_preset_names() -> None:
    assert preset_name("cooking-teacher") == "Cooking teacher"
    assert preset_name("0b6c1c44-9d0e-4f47-9e0f-7a1f6f0f7c11") == "0b6c1c44-9d0e-4f47-9e0f-7a1f6f0f7c11"
