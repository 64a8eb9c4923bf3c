"""Settings of the local engine: provisioning delay, capacity, timeouts.

A ``Delay`` is a small distribution written as text so that it fits in an
environment variable or a control request:

    "2" or "fixed:2"       always 2 s
    "uniform:1,3"          uniformly between 1 and 3 s
    "lognormal:3,0.4"      log-normal with a median of 3 s and sigma 0.4

``EngineConfig`` is mutable on purpose: ``PATCH /_control/config`` changes it
while the engine runs, and the engine reads it each time it needs a value.

Environment (``EngineConfig.from_env``):

    AVATAR_ENGINE_PROVISION_DELAY   a Delay text            (default lognormal:2,0.35)
    AVATAR_ENGINE_AVATAR_DELAY      a Delay text            (default uniform:1,2): avatar PROCESSING time
    AVATAR_ENGINE_CONCURRENCY       positive int, or "none" (default none: unlimited)
    AVATAR_ENGINE_READY_TTL         seconds > 0             (default 60)
    AVATAR_ENGINE_CONNECT_GRACE     seconds > 0             (default 30)
    AVATAR_ENGINE_MAX_DURATION      int seconds >= 1        (default 1800)
    AVATAR_ENGINE_SEED              int                     (default: random)

    AVATAR_ENGINE_ICE_SERVERS       JSON list of RTCIceServer objects (default: none)

A bad value raises ``engine.errors.EngineConfigError`` naming the variable.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from avatar_server.engine.errors import EngineConfigError
from avatar_server.ice import parse_ice_servers

DelayKind = Literal["fixed", "uniform", "lognormal"]
_KINDS: tuple[str, ...] = ("fixed", "uniform", "lognormal")


@dataclass(frozen=True)
class Delay:
    """A delay distribution in seconds. ``a``/``b``: fixed value; uniform low/high; lognormal median/sigma."""

    kind: DelayKind
    a: float
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown delay kind {self.kind!r} (expected one of {', '.join(_KINDS)})")
        for name, value in (("a", self.a), ("b", self.b)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"delay parameter {name}={value!r} must be a finite number >= 0")
        if self.kind == "uniform" and self.b < self.a:
            raise ValueError(f"uniform delay needs low <= high, got {self.a:g},{self.b:g}")
        if self.kind == "lognormal" and self.a <= 0:
            raise ValueError(f"lognormal delay needs a median > 0, got {self.a:g}")

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return rng.lognormvariate(math.log(self.a), self.b)

    @classmethod
    def parse(cls, text: str) -> Delay:
        raw = text.strip()
        if not raw:
            raise ValueError("empty delay; expected e.g. '2', 'fixed:2', 'uniform:1,3' or 'lognormal:3,0.4'")
        kind, sep, params = raw.partition(":")
        if not sep:
            kind, params = "fixed", raw
        kind = kind.strip().lower()
        if kind not in _KINDS:
            raise ValueError(
                f"bad delay {text!r}: unknown kind {kind!r} (expected fixed, uniform or lognormal)"
            )
        try:
            numbers = [float(p) for p in params.split(",")]
        except ValueError:
            raise ValueError(f"bad delay {text!r}: parameters must be numbers") from None
        expected = 1 if kind == "fixed" else 2
        if len(numbers) != expected:
            raise ValueError(f"bad delay {text!r}: {kind} takes {expected} parameter(s)")
        try:
            return cls(kind, *numbers)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"bad delay {text!r}: {exc}") from None

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"


@dataclass(kw_only=True)
class EngineConfig:
    """How the local engine behaves. Mutable at runtime through the control API."""

    provisioning_delay: Delay = Delay("lognormal", 2.0, 0.35)
    # How long a created avatar (or one whose image was replaced) stays PROCESSING before it
    # becomes READY (or FAILED for an image that cannot be decoded).
    avatar_processing_delay: Delay = Delay("uniform", 1.0, 2.0)
    # Sessions counted against the limit: provisioning (NOT_READY, not queued), READY, RUNNING.
    # Beyond it new sessions wait NOT_READY with queued=true. None: unlimited.
    concurrency_limit: int | None = None
    # A READY session not consumed within this many seconds becomes FAILED (failureCode "expired").
    ready_ttl: float = 60.0
    # Seconds after consume within which the media peer expects the client's WebRTC offer;
    # read by engine.media (the session state does not enforce it itself).
    connect_grace: float = 30.0
    # Effective ceiling on a RUNNING session, like Runway ending sessions at ~300 s whatever
    # maxDuration says: a session completes after min(maxDuration, max_duration_limit) seconds.
    max_duration_limit: int = 1800
    # A fault for tests: False makes the engine ignore a session's maxDuration (only
    # max_duration_limit stops it), so the server's own cap enforcement is what is seen.
    honour_max_duration: bool = True
    # ICE servers for the media peer (RTCIceServer dicts); none needed on one machine.
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError("concurrency_limit must be >= 1 or None")
        if not (self.ready_ttl > 0 and math.isfinite(self.ready_ttl)):
            raise ValueError("ready_ttl must be a finite number > 0")
        if not (self.connect_grace > 0 and math.isfinite(self.connect_grace)):
            raise ValueError("connect_grace must be a finite number > 0")
        if self.max_duration_limit < 1:
            raise ValueError("max_duration_limit must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EngineConfig:
        kwargs: dict[str, object] = {}

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        if (text := get("AVATAR_ENGINE_PROVISION_DELAY")) is not None:
            try:
                kwargs["provisioning_delay"] = Delay.parse(text)
            except ValueError as exc:
                raise EngineConfigError(f"AVATAR_ENGINE_PROVISION_DELAY: {exc}") from None
        if (text := get("AVATAR_ENGINE_AVATAR_DELAY")) is not None:
            try:
                kwargs["avatar_processing_delay"] = Delay.parse(text)
            except ValueError as exc:
                raise EngineConfigError(f"AVATAR_ENGINE_AVATAR_DELAY: {exc}") from None
        if (text := get("AVATAR_ENGINE_CONCURRENCY")) is not None:
            if text.lower() in ("none", "unlimited"):
                kwargs["concurrency_limit"] = None
            else:
                kwargs["concurrency_limit"] = _int(
                    "AVATAR_ENGINE_CONCURRENCY", text, minimum=1, hint='or "none"'
                )
        if (text := get("AVATAR_ENGINE_READY_TTL")) is not None:
            kwargs["ready_ttl"] = _positive_float("AVATAR_ENGINE_READY_TTL", text)
        if (text := get("AVATAR_ENGINE_CONNECT_GRACE")) is not None:
            kwargs["connect_grace"] = _positive_float("AVATAR_ENGINE_CONNECT_GRACE", text)
        if (text := get("AVATAR_ENGINE_MAX_DURATION")) is not None:
            kwargs["max_duration_limit"] = _int("AVATAR_ENGINE_MAX_DURATION", text, minimum=1)
        if (text := get("AVATAR_ENGINE_ICE_SERVERS")) is not None:
            try:
                kwargs["ice_servers"] = parse_ice_servers(text)
            except ValueError as exc:
                raise EngineConfigError(str(exc)) from None
        if (text := get("AVATAR_ENGINE_SEED")) is not None:
            kwargs["seed"] = _int("AVATAR_ENGINE_SEED", text)
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        return {
            "provisioningDelay": str(self.provisioning_delay),
            "avatarProcessingDelay": str(self.avatar_processing_delay),
            "concurrencyLimit": self.concurrency_limit,
            "readyTtl": self.ready_ttl,
            "connectGrace": self.connect_grace,
            "maxDurationLimit": self.max_duration_limit,
            "honourMaxDuration": self.honour_max_duration,
            "seed": self.seed,
        }


def _int(name: str, text: str, *, minimum: int | None = None, hint: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        extra = f" {hint}" if hint else ""
        raise EngineConfigError(f"{name}: expected an integer{bound}{extra}, got {text!r}")
    return value


def _positive_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise EngineConfigError(f"{name}: expected a number of seconds > 0, got {text!r}")
    return value
