"""Control routes of the engine (API key only; no version header), for tests, demos and benchmarks:

    POST   /_control/faults      {"rules": [...]} append fault rules (see engine.faults)
    GET    /_control/faults      pending rules
    DELETE /_control/faults      clear rules (204)
    POST   /_control/fail-next   {"count", "failureCode", "failure"}: next sessions FAIL instead of READY
    GET    /_control/config      current settings
    PATCH  /_control/config      {"provisioningDelay", "avatarProcessingDelay", "concurrencyLimit", "readyTtl",
                                  "connectGrace", "maxDurationLimit"} (all optional; validated before any applies)
    GET    /_control/sessions    [{id, status, queued, consumed, createdAt, endedAt, readyAt(epoch|null)}]
    GET    /_control/stats       {requests: {op: n}, faultsInjected: {op: n}, pendingRules, sessions, active, queued,
                                  alive, peakAlive (most not terminal at once), peakPerSecond (most requests in a second)}
    DELETE /_control/stats       reset the counters (204)

And ``GET /healthz`` (no key): 200 while the engine serves.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from aiohttp import web

from avatar_server.engine.config import Delay
from avatar_server.engine.errors import EngineError
from avatar_server.engine.faults import FaultRule, FaultRuleError
from avatar_server.engine.http.auth import require_api_key
from avatar_server.engine.http.bodies import json_body
from avatar_server.engine.http.context import ENGINE_FAULTS, ENGINE_STATE
from avatar_server.runway import iso_ms


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_post("/_control/faults", add_faults)
    app.router.add_get("/_control/faults", list_faults, allow_head=False)
    app.router.add_delete("/_control/faults", clear_faults)
    app.router.add_post("/_control/fail-next", fail_next)
    app.router.add_get("/_control/config", get_config, allow_head=False)
    app.router.add_patch("/_control/config", patch_config)
    app.router.add_get("/_control/sessions", list_sessions, allow_head=False)
    app.router.add_get("/_control/stats", get_stats, allow_head=False)
    app.router.add_delete("/_control/stats", reset_stats)


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness, no key needed: 200 while the engine serves (``avatar-server engine``'s health check)."""
    return web.json_response({"status": "ok"})


async def add_faults(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    body = await json_body(request)
    raw_rules = body.get("rules") if isinstance(body, dict) else None
    if not isinstance(raw_rules, list):
        raise EngineError(400, 'Expected {"rules": [...]}')
    try:
        rules = [FaultRule.from_json(raw) for raw in raw_rules]
    except FaultRuleError as exc:
        raise EngineError(400, f"Invalid fault rule: {exc}") from None
    faults = request.app[ENGINE_FAULTS]
    faults.add(rules)
    return web.json_response({"rules": [r.to_json() for r in faults.rules]})


async def list_faults(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    return web.json_response({"rules": [r.to_json() for r in request.app[ENGINE_FAULTS].rules]})


async def clear_faults(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    request.app[ENGINE_FAULTS].clear()
    return web.Response(status=204)


async def fail_next(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise EngineError(400, "Expected a JSON object")
    count = body.get("count", 1)
    code = body.get("failureCode", "provisioning_failed")
    failure = body.get("failure", "The avatar could not be provisioned")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise EngineError(400, "count must be an integer >= 1")
    if not isinstance(code, str) or not code or not isinstance(failure, str) or not failure:
        raise EngineError(400, "failureCode and failure must be non-empty strings")
    request.app[ENGINE_STATE].fail_next(count, code, failure)
    return web.json_response({"count": count, "failureCode": code, "failure": failure})


async def get_config(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    return web.json_response(request.app[ENGINE_STATE].config.to_json())


async def patch_config(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise EngineError(400, "Expected a JSON object")
    state = request.app[ENGINE_STATE]
    changes: dict[str, Any] = {}
    for key, attr in (("provisioningDelay", "provisioning_delay"),
                      ("avatarProcessingDelay", "avatar_processing_delay")):
        if key in body:
            raw = body[key]
            if _is_number(raw):
                raw = str(raw)
            if not isinstance(raw, str):
                raise EngineError(400, f"{key} must be a delay text like 'uniform:1,2'")
            try:
                changes[attr] = Delay.parse(raw)
            except ValueError as exc:
                raise EngineError(400, f"{key}: {exc}") from None
    if "concurrencyLimit" in body:
        limit = body["concurrencyLimit"]
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise EngineError(400, "concurrencyLimit must be an integer >= 1 or null")
        changes["concurrency_limit"] = limit
    for key, attr in (("readyTtl", "ready_ttl"), ("connectGrace", "connect_grace")):
        if key in body:
            value = body[key]
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise EngineError(400, f"{key} must be a number of seconds > 0")
            changes[attr] = float(value)
    if "honourMaxDuration" in body:
        if not isinstance(body["honourMaxDuration"], bool):
            raise EngineError(400, "honourMaxDuration must be true or false")
        changes["honour_max_duration"] = body["honourMaxDuration"]
    if "maxDurationLimit" in body:
        value = body["maxDurationLimit"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EngineError(400, "maxDurationLimit must be an integer >= 1")
        changes["max_duration_limit"] = value
    for attr, value in changes.items():
        setattr(state.config, attr, value)
    state.config_changed()
    return web.json_response(state.config.to_json())


async def list_sessions(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    return web.json_response(
        [
            {
                "id": s.id,
                "status": s.status.value,
                "queued": s.queued,
                "consumed": s.consumed,
                "createdAt": iso_ms(s.created_at),
                "endedAt": iso_ms(s.ended_at) if s.ended_at is not None else None,
                "readyAt": s.ready_at,
            }
            for s in request.app[ENGINE_STATE].sessions.values()
        ]
    )


async def get_stats(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    state = request.app[ENGINE_STATE]
    stats = request.app[ENGINE_FAULTS].stats()
    stats["sessions"] = dict(Counter(s.status.value for s in state.sessions.values()))
    stats["active"] = state.active_count()
    stats["queued"] = sum(1 for s in state.sessions.values() if s.queued)
    stats["alive"] = state.alive
    stats["peakAlive"] = state.peak_alive
    return web.json_response(stats)


async def reset_stats(request: web.Request) -> web.StreamResponse:
    require_api_key(request)
    request.app[ENGINE_FAULTS].reset_stats()
    state = request.app[ENGINE_STATE]
    state.peak_alive = state.alive
    return web.Response(status=204)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
