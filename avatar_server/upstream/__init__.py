"""The upstream: Runway's Characters API (or the local engine). The only package importing httpx.

``UpstreamClient`` (``client``) is the one object callers use, made of ``transport`` (the httpx
client, the request budget's gate, retries and the non-idempotent rules), ``sessions`` (realtime
sessions, their conversations, usage) and ``catalog`` (avatars, documents, voices); ``failures``
translates answers into ``avatar_server.errors``, ``retry`` is the pure retry policy, ``budget`` the
requests-per-second gate, ``wire`` Runway's session shapes.
"""

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
