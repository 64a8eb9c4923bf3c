"""The upstream: Runway's Characters API (or the local engine). The only package importing httpx."""

from __future__ import annotations

from avatar_server.upstream.client import UpstreamClient
from avatar_server.upstream.retry import (
    CREATE_RETRYABLE_STATUSES,
    RETRYABLE_STATUSES,
    RetryPolicy,
    parse_retry_after,
)
from avatar_server.upstream.wire import ConsumeResult, UpstreamSession

__all__ = [
    "CREATE_RETRYABLE_STATUSES",
    "RETRYABLE_STATUSES",
    "ConsumeResult",
    "RetryPolicy",
    "UpstreamClient",
    "UpstreamSession",
    "parse_retry_after",
]
