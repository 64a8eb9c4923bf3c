"""The no-secret-leak invariant, checked around every test (autouse fixture ``leak_guard``).

It learns the secrets as they come into being — the admin token and the Runway secret (the
harness's), every upstream session key and every upstream media credential (``token``) the
server's upstream client handles — and records everything a browser sees: the body of every
HTTP answer to a browser-style request (a publishable key, a clientToken, or an ``Origin``),
every WebSocket frame a client receives, and every log line (caplog, formatted the way the
server writes them, redaction filter included).

A test fails if any of those (answer headers included) holds a secret, except the media
credential in exactly the two places it is meant for: the ``token`` of a
``POST /v1/sessions/connect`` answer and of the ``credentials`` frame on the session's own
signal socket — and there the ``token`` must be a media credential the upstream issued (never
a session key or any other secret), handed to one session only. Client tokens and publishable
keys are secrets for logs too, and so are sites' webhook secrets (``webhookSecret``, learnt from
the answers that show them once).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from avatar_server.logs import LineFormatter, RedactingFilter
from avatar_server.upstream import UpstreamClient

from .harness import ADMIN_TOKEN, ENGINE_KEY


@dataclass
class LeakGuard:
    static: set[str] = field(default_factory=lambda: {ADMIN_TOKEN, ENGINE_KEY})
    upstream: set[str] = field(default_factory=set)  # session keys, media tokens
    media_tokens: set[str] = field(default_factory=set)  # the subset a browser may hold, in its place
    handed: dict[str, str] = field(default_factory=dict)  # media token → the session it was handed for
    misplaced: list[str] = field(default_factory=list)
    browser_tokens: set[str] = field(default_factory=set)  # ct_/pk_ values (secrets for logs)
    answers: list[tuple[str, Any]] = field(default_factory=list)
    frames: list[tuple[str, Any]] = field(default_factory=list)

    def add_secret(self, value: str | None) -> None:
        if value and len(value) >= 8:
            self.upstream.add(value)

    # --- recording ---------------------------------------------------------------------
    def record_answer(self, resp: aiohttp.ClientResponse, body: bytes) -> None:
        auth = resp.request_info.headers.get("Authorization", "")
        token = auth.partition(" ")[2]
        is_browser = token.startswith(("pk_", "ct_")) or "Origin" in resp.request_info.headers
        text = body.decode(errors="replace")
        self._learn_browser_tokens(text)
        if not is_browser:
            return
        where = f"{resp.request_info.method} {resp.url.path} → {resp.status}"
        data: Any = _json(text)
        if resp.url.path.endswith("/v1/sessions/connect") and resp.status == 200 and isinstance(data, dict):
            data = self._take_media_token(where, data, data.get("sessionId"))  # its place
        headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        self.answers.append((where, data if data is not None else text))
        self.answers.append((where + " (headers)", headers))

    def record_frame(self, url: str, text: str) -> None:
        data = _json(text)
        where = f"frame on {url.split('?')[0]}"
        if isinstance(data, dict) and data.get("type") == "credentials":
            parts = url.split("?")[0].rstrip("/").split("/")
            own = parts[-2] if parts[-1] == "signal" else None
            data = self._take_media_token(where, data, own)  # its place, on the own socket
        self.frames.append((where, data if data is not None else text))

    def _take_media_token(self, where: str, data: dict[str, Any], session_id: Any) -> dict[str, Any]:
        """The ``token`` of a credentials answer: a media credential, for this session only."""
        token = data.get("token")
        if token is not None:
            if token not in self.media_tokens:
                self.misplaced.append(f"{where}: its token is not a media credential the upstream issued")
            elif self.handed.setdefault(token, str(session_id)) != str(session_id):
                self.misplaced.append(f"{where}: a media credential of session {self.handed[token]} "
                                      f"handed for session {session_id}")
        return {k: v for k, v in data.items() if k != "token"}

    def _learn_browser_tokens(self, text: str) -> None:
        data = _json(text)
        for obj in (data if isinstance(data, list) else [data]):
            if isinstance(obj, dict):
                for name in ("clientToken", "publishableKey", "webhookSecret"):
                    if isinstance(obj.get(name), str):
                        self.browser_tokens.add(obj[name])
                for item in obj.get("data", []) if isinstance(obj.get("data"), list) else []:
                    if isinstance(item, dict) and isinstance(item.get("publishableKey"), str):
                        self.browser_tokens.add(item["publishableKey"])

    # --- checking ----------------------------------------------------------------------
    def problems(self, records: list[logging.LogRecord]) -> list[str]:
        out = list(self.misplaced)
        secrets = self.static | self.upstream
        for where, data in self.answers + self.frames:
            text = data if isinstance(data, str) else json.dumps(data)
            out += [f"{where} holds {_name(s)}" for s in secrets if s in text]
        fmt = LineFormatter(as_json=True)
        redact = RedactingFilter()
        for record in records:
            raw = record.getMessage()
            redact.filter(record)
            line = fmt.format(record)
            # and every string the record carries beside its message (a formatter may print it:
            # aiohttp's access log passes the raw request line, query string included)
            raw += " " + " ".join(v for k, v in record.__dict__.items()
                                  if k not in _STANDARD_ATTRS and isinstance(v, str))
            for s in secrets | self.browser_tokens:
                if s in line or s in raw:
                    out.append(f"log line of {record.name} holds {_name(s)}: {line.replace(s, '<SECRET>')[:300]}")
        return out


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def _name(secret: str) -> str:
    kind = ("the admin token" if secret == ADMIN_TOKEN else "the Runway secret" if secret == ENGINE_KEY
            else "a client token" if secret.startswith("ct_") else "a publishable key" if secret.startswith("pk_")
            else "a webhook secret" if secret.startswith("whsec_")
            else "an upstream session key or media credential")
    return f"{kind} ({secret[:4]}…)"


@pytest.fixture(autouse=True)
def leak_guard(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[LeakGuard]:
    guard = LeakGuard()
    caplog.set_level(logging.DEBUG, logger="avatar_server")

    real_get = UpstreamClient.get_session
    real_consume = UpstreamClient.consume
    real_read = aiohttp.ClientResponse.read
    real_receive = aiohttp.ClientWebSocketResponse.receive

    async def get_session(self: UpstreamClient, upstream_id: str, **kw: Any) -> Any:
        state = await real_get(self, upstream_id, **kw)
        guard.add_secret(state.sessionKey)
        return state

    async def consume(self: UpstreamClient, upstream_id: str, session_key: str) -> Any:
        guard.add_secret(session_key)
        result = await real_consume(self, upstream_id, session_key)
        guard.add_secret(result.token)
        guard.media_tokens.add(result.token)
        return result

    async def read(self: aiohttp.ClientResponse) -> bytes:
        fresh = self._body is None
        body = await real_read(self)
        if fresh:
            guard.record_answer(self, body)
        return body

    async def receive(self: aiohttp.ClientWebSocketResponse, *args: Any, **kw: Any) -> aiohttp.WSMessage:
        msg = await real_receive(self, *args, **kw)
        if msg.type == aiohttp.WSMsgType.TEXT:
            guard.record_frame(str(self._response.url), str(msg.data))
        return msg

    monkeypatch.setattr(UpstreamClient, "get_session", get_session)
    monkeypatch.setattr(UpstreamClient, "consume", consume)
    monkeypatch.setattr(aiohttp.ClientResponse, "read", read)
    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "receive", receive)
    yield guard
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    problems = guard.problems(records)
    if problems:
        pytest.fail("secrets leaked:\n" + "\n".join(sorted(set(problems))[:30]), pytrace=False)
