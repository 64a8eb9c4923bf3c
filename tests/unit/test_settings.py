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
        ({"AVATAR_SERVER_START_RATE_PER_MINUTE": "-1"}, "AVATAR_SERVER_START_RATE_PER_MINUTE"),
        ({"AVATAR_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"}, "'proxy.local'"),
        ({"AVATAR_SERVER_IDLE_TIMEOUT_SECONDS": "0"}, "AVATAR_SERVER_IDLE_TIMEOUT_SECONDS"),
        ({"AVATAR_SERVER_BODY_TIMEOUT_SECONDS": "soon"}, "AVATAR_SERVER_BODY_TIMEOUT_SECONDS"),
        ({"AVATAR_ENGINE_ICE_SERVERS": '{"urls": "stun:x"}'}, "AVATAR_ENGINE_ICE_SERVERS"),
        ({"AVATAR_ENGINE_ICE_SERVERS": '[{"url": "stun:x"}]'}, "AVATAR_ENGINE_ICE_SERVERS"),
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


def test_browser_limits_and_proxies_from_env() -> None:
    s = Settings.from_env({
        "AVATAR_SERVER_START_RATE_PER_MINUTE": "0",
        "AVATAR_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7 ,::1",
        "AVATAR_SERVER_IDLE_TIMEOUT_SECONDS": "5",
        "AVATAR_SERVER_BODY_TIMEOUT_SECONDS": "12.5",
        "AVATAR_ENGINE_ICE_SERVERS": '[{"urls": ["stun:stun.example.com:3478"]}]',
    })
    assert s.ice_servers == ({"urls": ["stun:stun.example.com:3478"]},)
    assert s.start_rate_per_minute == 0  # 0 switches the per-visitor limit off
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    assert (s.idle_timeout, s.body_timeout) == (5.0, 12.5)
    d = Settings.from_env({})
    assert (d.start_rate_per_minute, d.trusted_proxies, d.idle_timeout, d.body_timeout) == (10, (), 15.0, 30.0)


def test_metrics_and_webhook_settings() -> None:
    s = Settings.from_env({})
    assert (s.metrics_token, s.allow_private_targets, s.webhook_timeout, s.webhook_retry_seconds) == \
        (None, False, 10.0, 5.0)
    s = Settings.from_env({"AVATAR_SERVER_METRICS_TOKEN": "mtk_" + "a" * 20, "AVATAR_SERVER_ALLOW_PRIVATE_TARGETS": "1",
                           "AVATAR_SERVER_WEBHOOK_TIMEOUT_SECONDS": "3", "AVATAR_SERVER_WEBHOOK_RETRY_SECONDS": "0.5"})
    assert (s.metrics_token, s.allow_private_targets, s.webhook_timeout, s.webhook_retry_seconds) == \
        ("mtk_" + "a" * 20, True, 3.0, 0.5)
    assert "mtk_" not in repr(s)
    for env, needle in (({"AVATAR_SERVER_METRICS_TOKEN": "short"}, "AVATAR_SERVER_METRICS_TOKEN"),
                        ({"AVATAR_SERVER_ALLOW_PRIVATE_TARGETS": "maybe"}, "AVATAR_SERVER_ALLOW_PRIVATE_TARGETS"),
                        ({"AVATAR_SERVER_WEBHOOK_TIMEOUT_SECONDS": "600"}, "AVATAR_SERVER_WEBHOOK_TIMEOUT_SECONDS")):
        with pytest.raises(ConfigError, match=needle):
            Settings.from_env(env)
