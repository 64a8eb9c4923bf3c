"""The local, Runway-compatible engine: realtime sessions served by avatar_server itself.

- ``config``: ``EngineConfig`` / ``Delay`` (provisioning delay, concurrency, timeouts).
- ``state``: ``EngineState`` — sessions, lifecycle, timers (no HTTP).
- ``faults``: injected faults and request counters.
- ``api``: ``create_engine_app`` — the aiohttp application (Runway routes + ``/_control``).
- ``media``: the WebRTC media peer (aiortc is imported only there).
"""

from __future__ import annotations

from avatar_server.engine.api import ENGINE_FAULTS, ENGINE_STATE, create_engine_app
from avatar_server.engine.config import Delay, EngineConfig
from avatar_server.engine.faults import FaultInjector, FaultRule
from avatar_server.engine.state import EngineError, EngineSession, EngineState, EngineStatus

__all__ = [
    "ENGINE_FAULTS",
    "ENGINE_STATE",
    "Delay",
    "EngineConfig",
    "EngineError",
    "EngineSession",
    "EngineState",
    "EngineStatus",
    "FaultInjector",
    "FaultRule",
    "create_engine_app",
]
