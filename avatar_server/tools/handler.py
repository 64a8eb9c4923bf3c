"""One ``backend_rpc`` call, whatever carried it (the engine's channel or a LiveKit RPC): who called,
what it asked, the site's backend's answer. Transport-free, so both channels share it (and tests
drive it through the ``livekit`` SDK's own types)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import jsonlimits
from ..errors import ToolCallFailed
from ..models.sessions import SessionRecord
from .site_backend import SiteBackend

log = logging.getLogger("avatar_server.tools")

WORKER_PREFIX = "worker:"
DEFAULT_TIMEOUT = 10.0
MAX_PAYLOAD = 65_536

SecretOf = Callable[[str], Awaitable[str | None]]
# (tool name, outcome "ok" | "error" | "timeout" | "refused", seconds) — metrics
Observe = Callable[[str, str, float], None]


def parse_payload(payload: str) -> dict[str, Any]:
    """The call's arguments: a JSON object, under ``args`` or the whole of it (Runway's Node handler)."""
    if len(payload) > MAX_PAYLOAD:
        raise ToolCallFailed("the payload is too large")
    try:
        data = jsonlimits.loads(payload) if payload.strip() else {}
    except ValueError:
        raise ToolCallFailed("the payload is not JSON") from None
    if not isinstance(data, dict):
        raise ToolCallFailed("the payload is not a JSON object")
    args = data.get("args", data) if set(data) <= {"args"} or isinstance(data.get("args"), dict) else data
    if not isinstance(args, dict):
        raise ToolCallFailed("args is not a JSON object")
    return args


class ToolHandler:
    def __init__(self, backend: SiteBackend, secret_of: SecretOf, observe: Observe | None = None) -> None:
        self.backend = backend
        self.secret_of = secret_of
        self.observe = observe

    async def handle(self, rec: SessionRecord, method: str, caller_identity: str, payload: str) -> str:
        """The JSON-encoded result of ``method`` for the session ``rec``; ``ToolCallFailed`` otherwise."""
        started = time.monotonic()
        outcome = "error"
        try:
            if not caller_identity.startswith(WORKER_PREFIX):
                outcome = "refused"
                raise ToolCallFailed("the caller is not the avatar's worker")
            tool = next((t for t in rec.tools or [] if t.get("name") == method), None)
            if tool is None or tool.get("type") != "backend_rpc":
                outcome = "refused"
                raise ToolCallFailed(f"no backend_rpc tool {method!r} on this session")
            if not tool.get("url"):
                raise ToolCallFailed(f"the tool {method!r} has no url (only a site's tools do)")
            args = parse_payload(payload)
            secret = await self.secret_of(rec.siteId) if rec.siteId else None
            body = {"sessionId": rec.id, "siteId": rec.siteId, "tool": method, "args": args}
            timeout = float(tool.get("timeoutSeconds") or DEFAULT_TIMEOUT)
            try:
                result = await self.backend.call(tool["url"], body, secret=secret, timeout=timeout)
            except ToolCallFailed as exc:
                outcome = "timeout" if "did not answer within" in exc.message else "error"
                raise
            outcome = "ok"
            return json.dumps(result)
        except ToolCallFailed as exc:
            log.info("tool call failed: %s", exc.message, extra={"session_id": rec.id, "tool": method})
            raise
        finally:
            if self.observe is not None:
                try:
                    self.observe(method, outcome, time.monotonic() - started)
                except Exception:
                    log.exception("the tool observer failed")
