"""The engine application's keys, and where its routes are reached from outside."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from avatar_server.engine.backend import BackendHub
from avatar_server.engine.faults import FaultInjector
from avatar_server.engine.media.manager import MediaManager
from avatar_server.engine.state import EngineState
from avatar_server.engine.voices import EngineVoices


@dataclass(frozen=True)
class EngineContext:
    api_keys: Callable[[], Iterable[str]]
    public_url: str | None


ENGINE_STATE = web.AppKey("engine_state", EngineState)
ENGINE_MEDIA = web.AppKey("engine_media", MediaManager)
ENGINE_BACKENDS = web.AppKey("engine_backends", BackendHub)
ENGINE_FAULTS = web.AppKey("engine_faults", FaultInjector)
ENGINE_VOICES = web.AppKey("engine_voices", EngineVoices)
ENGINE_CONTEXT = web.AppKey("engine_context", EngineContext)


def public_base(request: web.Request) -> str:
    """The public URL the engine was given, else the request's own scheme and host."""
    return request.app[ENGINE_CONTEXT].public_url or f"{request.scheme}://{request.host}"


def base_url(request: web.Request) -> str:
    """``<public base><mount prefix>``: where this engine's routes are reached from outside."""
    path = request.path
    prefix = path[: path.index("/v1/")] if "/v1/" in path else ""
    return public_base(request) + prefix
