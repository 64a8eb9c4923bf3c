"""Logging: one line per event, request and session ids attached, secrets never written.

``RedactingFilter`` scrubs anything that looks like a credential (bearer values, admin
tokens, client tokens, publishable keys, session keys, JWT-like strings) from every
record, as a last line of defence; code also never passes them to a logger.

``MalformedRequestFilter`` turns aiohttp's report of a request it could not parse (a garbage
request line, a bad method, a broken header: the client's mistake, answered 400) from an
ERROR with a traceback into one INFO line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar

from aiohttp.http_exceptions import BadHttpMessage

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\b(adm|ct|pk|sk|key)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"),  # webhook signing secrets (base64)
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)((?:token|sessionKey|secret|password|authorization)[\"']?\s*[=:]\s*[\"']?)[^\"'&\s,}]+"),
    # a credential in a query string (?key=pk_… on the start routes, or one sent by mistake)
    re.compile(r"(?i)([?&](?:key|api_?key|access_token|auth|bearer|client_?token|admin_token)=)[^&#\s\"']+"),
]
_EXTRA_FIELDS = ("session_id", "upstream_id", "reason", "error", "detail", "status", "method", "path",
                 "duration_ms", "avatar", "provision_seconds", "site_id", "remote")
_registered_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Secrets known at start (admin token, Runway secret) are scrubbed verbatim too."""
    if value and len(value) >= 8:
        _registered_secrets.add(value)


def redact(text: str) -> str:
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.lastindex else "") + "[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = redact(msg)
        record.args = None
        for name in _EXTRA_FIELDS:
            if name in record.__dict__ and isinstance(record.__dict__[name], str):
                record.__dict__[name] = redact(record.__dict__[name])
        rid = request_id_var.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ExtrasRedactingFilter(logging.Filter):
    """On aiohttp's loggers: every string a record carries beside its message is scrubbed too —
    the access logger passes the raw request line (``first_request_line``, query string
    included, e.g. ``?key=pk_…``) as an extra field a formatter may print."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                record.__dict__[name] = redact(value)
        return True


class MalformedRequestFilter(logging.Filter):
    """On ``aiohttp.server``: a request aiohttp could not parse becomes one INFO line without a
    traceback (aiohttp logs it as an ERROR with one, or at DEBUG for a bad method on a fresh
    connection). The offending bytes are not repeated: only the parser's reason.

    aiohttp's DEBUG report must reach the filter, so the logger is set to DEBUG; the filter then
    drops every other record below the level its parent (``aiohttp``) would let through."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            message = record.getMessage()
            remote = message.rpartition(" from ")[2] if " from " in message else "?"
            reason = next((line.strip() for line in str(exc.message).splitlines() if line.strip()), "")
            record.msg = f"malformed HTTP request from {remote} answered 400: {reason.rstrip(':')[:200]}"
            record.args = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record.levelno >= logging.getLogger("aiohttp").getEffectiveLevel()


def tame_malformed_requests() -> None:
    """Install ``MalformedRequestFilter`` (idempotent)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
    server.setLevel(logging.DEBUG)


_installed = False


def install_redaction() -> None:
    """Redact every log record at creation, whichever handler (or test capture) reads it.
    Also tames aiohttp's malformed-request reports (``tame_malformed_requests``) and scrubs the
    extra fields of aiohttp's records (``ExtrasRedactingFilter``)."""
    global _installed
    tame_malformed_requests()
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExtrasRedactingFilter) for f in logger.filters):
            logger.addFilter(ExtrasRedactingFilter())
    if _installed:
        return
    _installed = True
    base = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = base(*args, **kwargs)
        record.msg = redact(record.getMessage())
        record.args = None
        return record

    logging.setLogRecordFactory(factory)


class LineFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: record.__dict__[k] for k in (*_EXTRA_FIELDS, "request_id") if k in record.__dict__}
        if self.as_json:
            out = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                   "message": record.getMessage(), **fields}
            if record.exc_info:
                out["exc"] = redact(self.formatException(record.exc_info))
            return json.dumps(out, default=str)
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += f" [{extra}]"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(as_json))
    install_redaction()
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # one line per upstream call is the upstream client's job (retries, failures), not httpx's
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
