"""The local, Runway-compatible engine: realtime sessions served by avatar_server itself.

A product of its own (served alone by ``avatar-server engine`` or mounted at ``/engine``): it
imports from the rest of avatar_server only the bottom floor (``runway``, ``jsonlimits``,
``bearer``, ``logs``) and the generic Redis tools (``store.connection``, ``store.optimistic``,
``store.lex_index``).

- ``config``: ``EngineConfig`` / ``Delay`` (provisioning delay, concurrency, timeouts).
- ``errors``: ``EngineError`` (answered in Runway's shape) and ``EngineConfigError``.
- ``state``: ``EngineState`` — sessions, lifecycle (``runway.RealtimeStatus``), timers (no HTTP).
- ``catalog`` / ``store``: avatars and documents, and their Redis keys and transactions.
- ``voices``, ``backend``, ``faults``, ``presets``: custom voices, backend RPC channels,
  injected faults and request counters, preset avatar profiles.
- ``http``: ``create_engine_app`` — the aiohttp application (Runway routes + ``/_control``).
- ``media``: the WebRTC media peer (aiortc is imported only there).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatar_server.engine.config import Delay, EngineConfig
    from avatar_server.engine.errors import EngineConfigError, EngineError
    from avatar_server.engine.faults import FaultInjector, FaultRule
    from avatar_server.engine.http.app import create_engine_app
    from avatar_server.engine.http.context import ENGINE_FAULTS, ENGINE_STATE
    from avatar_server.engine.state import EngineSession, EngineState

# Loaded on first use, so that ``engine.errors`` or ``engine.config`` alone (the command line's
# error handling, settings) do not pull in aiohttp's app and aiortc.
_EXPORTS = {
    "ENGINE_FAULTS": "avatar_server.engine.http.context",
    "ENGINE_STATE": "avatar_server.engine.http.context",
    "Delay": "avatar_server.engine.config",
    "EngineConfig": "avatar_server.engine.config",
    "EngineConfigError": "avatar_server.engine.errors",
    "EngineError": "avatar_server.engine.errors",
    "EngineSession": "avatar_server.engine.state",
    "EngineState": "avatar_server.engine.state",
    "FaultInjector": "avatar_server.engine.faults",
    "FaultRule": "avatar_server.engine.faults",
    "create_engine_app": "avatar_server.engine.http.app",
}

__all__ = [
    "ENGINE_FAULTS",
    "ENGINE_STATE",
    "Delay",
    "EngineConfig",
    "EngineConfigError",
    "EngineError",
    "EngineSession",
    "EngineState",
    "FaultInjector",
    "FaultRule",
    "create_engine_app",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
