from __future__ import annotations

import random
import statistics

import pytest

from avatar_server.engine.config import Delay, EngineConfig
from avatar_server.engine.errors import EngineConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", Delay("fixed", 2.0)),
        ("0", Delay("fixed", 0.0)),
        ("fixed:0.2", Delay("fixed", 0.2)),
        (" uniform:1,3 ", Delay("uniform", 1.0, 3.0)),
        ("lognormal:3,0.4", Delay("lognormal", 3.0, 0.4)),
        ("LOGNORMAL:3,0", Delay("lognormal", 3.0, 0.0)),
    ],
)
def test_delay_parse(text: str, expected: Delay) -> None:
    assert Delay.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty delay"),
        ("gamma:1,2", "unknown kind 'gamma'"),
        ("fixed:abc", "must be numbers"),
        ("fixed:1,2", "fixed takes 1 parameter"),
        ("uniform:1", "uniform takes 2 parameter"),
        ("uniform:3,1", "low <= high"),
        ("lognormal:0,0.4", "median > 0"),
        ("-1", ">= 0"),
        ("fixed:inf", "finite"),
    ],
)
def test_delay_parse_rejects_bad_text_clearly(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Delay.parse(text)
    assert fragment in str(info.value)


def test_delay_str_round_trips() -> None:
    for text in ("fixed:0.2", "uniform:1,3", "lognormal:2,0.35"):
        assert str(Delay.parse(text)) == text
        assert Delay.parse(str(Delay.parse(text))) == Delay.parse(text)


def test_delay_samples_follow_the_distribution() -> None:
    rng = random.Random(7)
    assert Delay.parse("fixed:1.5").sample(rng) == 1.5
    uniform = [Delay.parse("uniform:1,3").sample(rng) for _ in range(2000)]
    assert min(uniform) >= 1.0 and max(uniform) <= 3.0
    assert 1.9 < statistics.mean(uniform) < 2.1
    lognormal = [Delay.parse("lognormal:3,0.4").sample(rng) for _ in range(4000)]
    assert all(x > 0 for x in lognormal)
    assert 2.8 < statistics.median(lognormal) < 3.2  # the first parameter is the median
    assert Delay.parse("lognormal:3,0").sample(rng) == pytest.approx(3.0)


def test_same_seed_same_samples() -> None:
    delay = Delay.parse("lognormal:2,0.35")
    a, b = random.Random(42), random.Random(42)
    assert [delay.sample(a) for _ in range(5)] == [delay.sample(b) for _ in range(5)]


def test_config_defaults() -> None:
    config = EngineConfig.from_env({})
    assert config == EngineConfig()
    assert config.provisioning_delay == Delay("lognormal", 2.0, 0.35)
    assert config.concurrency_limit is None
    assert config.ready_ttl == 60.0
    assert config.max_duration_limit == 1800


def test_config_from_env() -> None:
    config = EngineConfig.from_env(
        {
            "AVATAR_ENGINE_PROVISION_DELAY": "uniform:0.5,1",
            "AVATAR_ENGINE_CONCURRENCY": "3",
            "AVATAR_ENGINE_READY_TTL": "12.5",
            "AVATAR_ENGINE_CONNECT_GRACE": "5",
            "AVATAR_ENGINE_MAX_DURATION": "300",
            "AVATAR_ENGINE_SEED": "9",
            "UNRELATED": "x",
        }
    )
    assert config.provisioning_delay == Delay("uniform", 0.5, 1.0)
    assert config.concurrency_limit == 3
    assert config.ready_ttl == 12.5
    assert config.connect_grace == 5.0
    assert config.max_duration_limit == 300
    assert config.seed == 9
    assert EngineConfig.from_env({"AVATAR_ENGINE_CONCURRENCY": "none"}).concurrency_limit is None
    assert EngineConfig.from_env({"AVATAR_ENGINE_CONCURRENCY": "  "}).concurrency_limit is None


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"AVATAR_ENGINE_PROVISION_DELAY": "uniform:3,1"}, "AVATAR_ENGINE_PROVISION_DELAY: bad delay"),
        ({"AVATAR_ENGINE_CONCURRENCY": "0"}, "AVATAR_ENGINE_CONCURRENCY: expected an integer >= 1"),
        ({"AVATAR_ENGINE_CONCURRENCY": "many"}, "AVATAR_ENGINE_CONCURRENCY"),
        ({"AVATAR_ENGINE_READY_TTL": "-1"}, "AVATAR_ENGINE_READY_TTL: expected a number of seconds > 0"),
        ({"AVATAR_ENGINE_READY_TTL": "nan"}, "AVATAR_ENGINE_READY_TTL"),
        ({"AVATAR_ENGINE_MAX_DURATION": "0"}, "AVATAR_ENGINE_MAX_DURATION"),
        ({"AVATAR_ENGINE_SEED": "x"}, "AVATAR_ENGINE_SEED"),
    ],
)
def test_config_from_env_rejects_bad_values_naming_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(EngineConfigError) as info:
        EngineConfig.from_env(env)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_config_rejects_bad_values_in_code() -> None:
    with pytest.raises(ValueError):
        EngineConfig(concurrency_limit=0)
    with pytest.raises(ValueError):
        EngineConfig(ready_ttl=0)
