"""Injected faults around the engine's Runway routes (rules from ``/_control/faults``; see
``engine.faults``), and the request counters behind ``/_control/stats``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from avatar_server.engine.errors import EngineError
from avatar_server.engine.faults import FaultRule
from avatar_server.engine.http.auth import authorize
from avatar_server.engine.http.context import ENGINE_FAULTS
from avatar_server.engine.http.errors import error_response, seconds

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MESSAGES = {
    429: "Too many requests",
    503: "Service unavailable",
    502: "Bad gateway",
    504: "Gateway timeout",
}


def count(request: web.Request, op: str) -> None:
    request.app[ENGINE_FAULTS].count(op)


def guarded(op: str, perform: Handler) -> Handler:
    """A Runway route: counted as ``op``, authorized (key and version), under ``op``'s faults."""

    async def handler(request: web.Request) -> web.StreamResponse:
        count(request, op)
        authorize(request)
        return await with_faults(request, op, lambda: perform(request))

    return handler


async def with_faults(
    request: web.Request, op: str, perform: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Run ``perform`` under the next injected fault rule for ``op``, if one applies."""
    rule = request.app[ENGINE_FAULTS].take(op)
    if rule is None:
        return await perform()
    if rule.when == "before":
        if rule.delay_seconds:
            await asyncio.sleep(rule.delay_seconds)
        if rule.status is not None:
            return fault_response(rule)
        return await perform()
    try:
        response = await perform()
    except EngineError as exc:
        response = error_response(exc)
    if rule.delay_seconds:
        await asyncio.sleep(rule.delay_seconds)
    return fault_response(rule) if rule.status is not None else response


def fault_response(rule: FaultRule) -> web.Response:
    assert rule.status is not None
    message = rule.message or _MESSAGES.get(rule.status, "Request failed") + " (injected fault)"
    headers = {"Retry-After": seconds(rule.retry_after)} if rule.retry_after is not None else None
    return web.json_response({"error": message}, status=rule.status, headers=headers)
