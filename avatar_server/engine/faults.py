"""Injected faults for the local engine (tests, demos, benchmarks).

``POST /_control/faults`` appends rules; each request of an operation takes the
first matching rule (its own op, or ``any``), FIFO, and spends one of its
``times``:

    {"op": "create"|"get"|"consume"|"delete"|"any"     (any: any realtime-session op)
           | "avatar_create"|"avatar_get"|"avatar_update"|"avatar_delete"|"avatar_list"
           | "document_create"|"document_get"|"document_update"|"document_delete"|"document_list"
           | "conversation_list"|"conversation_get"|"conversation_delete"|"usage"
           | "voice_create"|"voice_list"|"voice_get"|"voice_update"|"voice_delete"|"voice_preview",
     "status": 429,            # optional: answer this error status (>= 400)
     "retryAfter": 2,          # optional: Retry-After header (seconds)
     "times": 1,               # how many requests the rule applies to (>= 1)
     "delaySeconds": 0,        # stall this long
     "when": "before"|"after",  # before: stall, then fail without doing the operation
                               #         (or, without status, do it: a slow answer)
                               # after:  do the operation, stall, then answer the error
                               #         (or, without status, the real answer late) —
                               #         an ambiguous create is {"op":"create","when":"after",
                               #         "delaySeconds": 30} against a client with a short timeout.
     "message": "..."}         # optional: the error text (default: the status's, "(injected fault)")
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Literal

OPS = ("create", "get", "consume", "delete")
CATALOG_OPS = tuple(f"{kind}_{action}" for kind in ("avatar", "document")
                    for action in ("create", "get", "update", "delete", "list"))
CONVERSATION_OPS = ("conversation_list", "conversation_get", "conversation_delete", "usage")
VOICE_OPS = tuple(f"voice_{action}" for action in ("create", "list", "get", "update", "delete", "preview"))
BACKEND_OPS = ("connect_backend",)
OTHER_OPS = (*CATALOG_OPS, *CONVERSATION_OPS, *VOICE_OPS, *BACKEND_OPS)  # not realtime-session ops: "any" leaves them alone
RuleOp = str  # one of OPS, OTHER_OPS or "any"


class FaultRuleError(ValueError):
    """A fault rule in a control request is malformed."""


@dataclass
class FaultRule:
    op: RuleOp
    status: int | None = None
    retry_after: float | None = None
    times: int = 1
    delay_seconds: float = 0.0
    when: Literal["before", "after"] = "before"
    message: str | None = None  # the error text answered instead of the default one

    @classmethod
    def from_json(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise FaultRuleError("each rule must be an object")
        op = raw.get("op", "any")
        if op not in (*OPS, *OTHER_OPS, "any"):
            raise FaultRuleError(f"op must be one of {', '.join((*OPS, *OTHER_OPS, 'any'))}, got {op!r}")
        status = raw.get("status")
        if status is not None and (not _is_int(status) or not 400 <= status <= 599):
            raise FaultRuleError(f"status must be an integer 400-599, got {status!r}")
        retry_after = raw.get("retryAfter")
        if retry_after is not None and (not _is_number(retry_after) or retry_after < 0):
            raise FaultRuleError(f"retryAfter must be a number >= 0, got {retry_after!r}")
        times = raw.get("times", 1)
        if not _is_int(times) or times < 1:
            raise FaultRuleError(f"times must be an integer >= 1, got {times!r}")
        delay = raw.get("delaySeconds", 0)
        if not _is_number(delay) or delay < 0 or not math.isfinite(delay):
            raise FaultRuleError(f"delaySeconds must be a number >= 0, got {delay!r}")
        when = raw.get("when", "before")
        if when not in ("before", "after"):
            raise FaultRuleError(f"when must be 'before' or 'after', got {when!r}")
        if status is None and delay == 0:
            raise FaultRuleError("a rule needs a status or delaySeconds > 0")
        message = raw.get("message")
        if message is not None and (not isinstance(message, str) or not 1 <= len(message) <= 500):
            raise FaultRuleError("message must be a string of 1-500 characters")
        return cls(
            op=op,
            status=status,
            retry_after=float(retry_after) if retry_after is not None else None,
            times=times,
            delay_seconds=float(delay),
            when=when,
            message=message,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "status": self.status,
            "retryAfter": self.retry_after,
            "times": self.times,
            "delaySeconds": self.delay_seconds,
            "when": self.when,
            "message": self.message,
        }


class FaultInjector:
    """FIFO fault rules plus request and fault counters per operation."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.times: deque[float] = deque(maxlen=100_000)  # monotonic time of each request

    def add(self, rules: list[FaultRule]) -> None:
        self.rules.extend(rules)

    def clear(self) -> None:
        self.rules.clear()

    def count(self, op: str) -> None:
        """Record one request of ``op`` (every request, including refused ones)."""
        self.requests[op] += 1
        self.times.append(time.monotonic())

    def peak_per_second(self) -> int:
        """The most requests in any one-second window (sliding) since the counters were reset."""
        ts, peak, lo = list(self.times), 0, 0
        for hi, t in enumerate(ts):
            while t - ts[lo] >= 1.0:
                lo += 1
            peak = max(peak, hi - lo + 1)
        return peak

    def take(self, op: str) -> FaultRule | None:
        """Spend the first rule that applies to ``op``, if any."""
        for i, rule in enumerate(self.rules):
            if rule.op == op or (rule.op == "any" and op in OPS):
                rule.times -= 1
                if rule.times <= 0:
                    del self.rules[i]
                self.injected[op] += 1
                return rule
        return None

    def reset_stats(self) -> None:
        self.requests.clear()
        self.injected.clear()
        self.times.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": {op: self.requests[op] for op in (*OPS, *OTHER_OPS)},
            "faultsInjected": {op: self.injected[op] for op in (*OPS, *OTHER_OPS)},
            "pendingRules": len(self.rules),
            "peakPerSecond": self.peak_per_second(),
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
