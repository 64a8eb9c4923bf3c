"""Logging: one line per event, request and session ids attached, secrets never written.

``RedactingFilter`` scrubs anything that looks like a credential (bearer values, admin
tokens, client tokens, publishable keys, session keys, JWT-like strings) from every
record, as a last line of defence; code also never passes them to a logger.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\b(adm|ct|pk|sk|key)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)((?:token|sessionKey|secret|password|authorization)[\"']?\s*[=:]\s*[\"']?)[^\"'&\s,}]+"),
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


_installed = False


def install_redaction() -> None:
    """Redact every log record at creation, whichever handler (or test capture) reads it."""
    global _installed
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
