"""Prometheus metrics: the only package that imports ``prometheus_client``.

Two kinds of figures (docs/operations.md, "Metrics"):

- **deployment gauges**, read from Redis at scrape time, the same on every instance: sessions by
  status, sessions alive past their cap, the waiting room, upstream slots, the webhook backlog.
  Take them from any one instance (``max`` or ``avg`` over instances, never ``sum``);
- **per-instance counters and histograms**, counted where the thing happened: starts admitted
  or refused, ends by reason, upstream requests and their latency, READY→credentials, cap
  lateness, webhook attempts. ``sum`` them over instances.

Each app has its own registry (several servers may share a process, as in the tests). The hooks
the rest of the server calls are plain methods (``session_start``, ``upstream_request``,
``webhook_attempt``) and a session observer (``MetricsObserver``), so no other package needs
``prometheus_client``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector

from ..models.sessions import EndReason, SessionRecord, SessionStatus
from ..store.metrics import SessionCounts

log = logging.getLogger("avatar_server.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PAST_CAP_GRACE = 5.0  # s: a RUNNING session this long past endsAt counts as alive past its cap

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Sources:
    """Where the deployment gauges come from (all async reads of Redis)."""

    sessions: Callable[[float, float], Awaitable[SessionCounts]]
    room: Callable[[], Awaitable[Any]]  # a RoomSnapshot (waiting, alive, limit)
    webhook_backlog: Callable[[], Awaitable[tuple[int, int]]]
    room_size: int  # AVATAR_SERVER_WAITING_ROOM_SIZE


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.sources: Sources | None = None
        # deployment gauges (read at scrape time)
        self.sessions = Gauge("avatar_server_sessions", "Sessions of this deployment by status (ENDED: still "
                              "indexed)", ["status"], registry=r)
        self.past_cap = Gauge("avatar_server_sessions_past_cap", "RUNNING sessions more than 5 s past their "
                              "endsAt (should always be 0)", registry=r)
        self.room_size = Gauge("avatar_server_waiting_room_size", "Starts waiting in the waiting room", registry=r)
        self.room_capacity = Gauge("avatar_server_waiting_room_capacity", "The most starts that may wait "
                                   "(AVATAR_SERVER_WAITING_ROOM_SIZE)", registry=r)
        self.slots_in_use = Gauge("avatar_server_upstream_slots_in_use", "Upstream sessions alive (slots taken)",
                                  registry=r)
        self.slots_limit = Gauge("avatar_server_upstream_slots_limit", "Upstream concurrency in force "
                                 "(configured or learned; 0: none known)", registry=r)
        self.webhook_backlog = Gauge("avatar_server_webhook_backlog", "Webhook deliveries not settled: due or in "
                                     "flight (state=due), waiting for a retry (state=retrying)", ["state"],
                                     registry=r)
        self.scrape_errors = Counter("avatar_server_metrics_scrape_errors", "Scrapes whose Redis figures "
                                     "could not be read (the gauges keep their last values)", registry=r)
        # per-instance counters
        self.starts = Counter("avatar_server_session_starts", "Session starts by outcome: admitted, or the "
                              "refusal's error code", ["outcome"], registry=r)
        self.ends = Counter("avatar_server_session_ends", "Session ends by reason", ["reason"], registry=r)
        self.upstream_requests = Counter("avatar_server_upstream_requests", "Upstream HTTP attempts by operation "
                                         "and HTTP status (timeout, error: no answer)", ["operation", "status"],
                                         registry=r)
        self.upstream_seconds = Histogram("avatar_server_upstream_request_seconds", "Upstream HTTP attempt "
                                          "latency", ["operation"], buckets=LATENCY_BUCKETS, registry=r)
        self.ready_to_credentials = Histogram("avatar_server_ready_to_credentials_seconds", "From READY to the "
                                              "credentials handed to the client", buckets=DELIVER_BUCKETS,
                                              registry=r)
        self.cap_lateness = Histogram("avatar_server_cap_lateness_seconds", "How long after endsAt a session "
                                      "ended by its cap was ended", buckets=LATENESS_BUCKETS, registry=r)
        self.webhook_attempts = Counter("avatar_server_webhook_attempts", "Webhook delivery attempts by outcome "
                                        "(delivered, retry, failed: given up)", ["outcome"], registry=r)
        self.tool_calls = Counter("avatar_server_tool_calls", "backend_rpc tool calls answered by the server, by "
                                  "outcome (ok, error, timeout, refused)", ["outcome"], registry=r)
        self.tool_seconds = Histogram("avatar_server_tool_call_seconds", "backend_rpc tool call time, the site's "
                                      "backend included", buckets=LATENCY_BUCKETS, registry=r)
        for reason in EndReason:
            self.ends.labels(reason=reason.value)
        self.starts.labels(outcome="admitted")

    # --- hooks the server calls -----------------------------------------------------------
    def session_start(self, outcome: str) -> None:
        self.starts.labels(outcome=outcome).inc()

    def upstream_request(self, operation: str, status: str, seconds: float) -> None:
        self.upstream_requests.labels(operation=operation, status=status).inc()
        self.upstream_seconds.labels(operation=operation).observe(seconds)

    def webhook_attempt(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome=outcome).inc()

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        """One backend_rpc call (the tool's name is not a label: sites name their tools)."""
        self.tool_calls.labels(outcome=outcome).inc()
        self.tool_seconds.observe(seconds)

    # --- scraping ---------------------------------------------------------------------------
    async def render(self) -> tuple[bytes, str]:
        """The text exposition, after reading the deployment gauges from Redis."""
        if self.sources is not None:
            try:
                await self._refresh(self.sources)
            except Exception as exc:  # Redis away: serve the counters and the last gauges
                self.scrape_errors.inc()
                log.warning("metrics: deployment figures not read (%s)", type(exc).__name__)
        return generate_latest(self.registry), CONTENT_TYPE

    async def _refresh(self, src: Sources) -> None:
        counts = await src.sessions(time.time(), PAST_CAP_GRACE)
        for status in SessionStatus:
            value = counts.ended if status is SessionStatus.ENDED else counts.by_status.get(status.value, 0)
            self.sessions.labels(status=status.value).set(value)
        self.past_cap.set(counts.past_cap)
        room = await src.room()
        self.room_size.set(room.waiting)
        self.room_capacity.set(src.room_size)
        self.slots_in_use.set(room.alive)
        self.slots_limit.set(room.limit)
        due, retrying = await src.webhook_backlog()
        self.webhook_backlog.labels(state="due").set(due)
        self.webhook_backlog.labels(state="retrying").set(retrying)


class MetricsObserver:
    """A session observer (``SessionService.observe``): READY→credentials on each start; ends by
    reason and, for ends by the cap, how late after ``endsAt`` the end was applied."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    async def session_started(self, rec: SessionRecord) -> None:
        if rec.readyAt is not None and rec.startedAt is not None:
            self.m.ready_to_credentials.observe(max(0.0, rec.startedAt - rec.readyAt))

    async def session_ended(self, rec: SessionRecord) -> None:
        reason = (rec.endReason or EndReason.ERROR).value
        self.m.ends.labels(reason=reason).inc()
        if rec.endReason is EndReason.CAP and rec.endsAt is not None and rec.endedAt is not None:
            # an upstream that stopped the session itself just before endsAt is recorded as cap too
            self.m.cap_lateness.observe(max(0.0, rec.endedAt - rec.endsAt))
