"""``UpstreamClient``: Runway's Characters API (or the local engine speaking the same API).

One object for callers, put together from the parts, each in a module of its own:

- ``transport.Transport`` — the httpx client, the request budget's gate, retries, the
  non-idempotent rules, ``close()``;
- ``sessions.RealtimeSessionCalls`` — realtime sessions (create, status, cancel, consume,
  connect_backend, ping), their conversations and the usage report;
- ``catalog.CatalogCalls`` — avatars, knowledge documents and custom voices;
- ``failures`` — what each answer or failure becomes in ``avatar_server.errors``.
"""

from __future__ import annotations

from avatar_server.upstream.catalog import CatalogCalls
from avatar_server.upstream.sessions import RealtimeSessionCalls


class UpstreamClient(RealtimeSessionCalls, CatalogCalls):
    """Every upstream call. ``close()`` is idempotent; use it as ``async with``."""
