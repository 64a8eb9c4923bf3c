from __future__ import annotations

from pathlib import Path

import pytest

from avatar_server.errors import ConfigError
from avatar_server.settings import Settings, load_or_create_admin_token


def test_defaults_are_the_embedded_local_engine() -> None:
    s = Settings.from_env({})
    assert s.engine_mode and s.redis_url is None
    assert (s.host, s.port, s.cap_seconds) == ("127.0.0.1", 8080, 300)
    assert s.base_url() == "http://127.0.0.1:8080"
    assert s.runway_base_url == "https://api.dev.runwayml.com"


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"AVATAR_SERVER_SESSION_CAP_SECONDS": "301"}, "AVATAR_SERVER_SESSION_CAP_SECONDS=301"),
        ({"AVATAR_SERVER_SESSION_CAP_SECONDS": "9"}, "between 10 and 300"),
        ({"AVATAR_SERVER_SESSION_CAP_SECONDS": "five"}, "not a whole number"),
        ({"AVATAR_SERVER_PORT": "70000"}, "AVATAR_SERVER_PORT"),
        ({"RUNWAYML_BASE_URL": "api.example.com"}, "RUNWAYML_BASE_URL"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"),
        ({"AVATAR_SERVER_PUBLIC_URL": "ftp://x"}, "AVATAR_SERVER_PUBLIC_URL"),
        ({"AVATAR_SERVER_ADMIN_TOKEN": "short"}, "too short"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_runway_mode_when_secret_set() -> None:
    s = Settings.from_env({"RUNWAYML_API_SECRET": "key_abc", "RUNWAYML_BASE_URL": "http://127.0.0.1:9/"})
    assert not s.engine_mode
    assert s.runway_base_url == "http://127.0.0.1:9"
    assert "key_abc" not in repr(s)


def test_admin_token_generated_once_and_kept(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    token, generated = load_or_create_admin_token(s)
    assert generated and token.startswith("adm_") and len(token) > 40
    again, generated_again = load_or_create_admin_token(s)
    assert (again, generated_again) == (token, False)
    assert oct((tmp_path / "d" / "admin-token").stat().st_mode & 0o777) == "0o600"
