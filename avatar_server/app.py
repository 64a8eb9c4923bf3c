"""``create_app(settings)``: builds the whole server. Tests call the same factory.

Every resource comes from a ``cleanup_ctx`` generator, so startup and cleanup are paired
and cleanup always runs, in reverse order: Redis → upstream client → event bus →
session service → timer loop. Long-lived WebSockets are closed in ``on_shutdown``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from . import appkeys as K
from .api import (
    avatars,
    conversations,
    cors,
    documents,
    health,
    metrics,
    middlewares,
    openapi,
    pages,
    room,
    security,
    sessions,
    signal,
    sites,
    voices,
    webhooks,
)
from .catalog.service import CatalogService
from .conversations import ConversationService, UsageService
from .demo import ensure_demo_site
from .engine import create_engine_app
from .engine.config import EngineConfig
from .engine.store import EngineCatalogStore
from .logs import install_redaction, register_secret
from .metrics import Metrics, MetricsObserver, Sources
from .sessions.admission import Admission
from .sessions.lifecycle import LifecycleConfig
from .sessions.load import LoadMonitor
from .sessions.room import WaitingRoom
from .sessions.service import SessionService
from .sessions.timers import TimerLoop
from .settings import Settings, load_or_create_admin_token
from .signalling.broker import SignalBroker
from .store.budget import BudgetStore
from .store.catalog import CatalogLock, CatalogStore
from .store.connection import open_redis, pool_in_use
from .store.conversations import ConversationStore
from .store.demo import DemoSiteRef
from .store.events import EventBus
from .store.metrics import DeploymentFigures
from .store.outbox import OutboxStore
from .store.ratelimit import RateLimiter
from .store.room import RoomStore
from .store.sessions import SessionStore
from .store.sites import SiteStore
from .tools import SiteBackend, ToolHandler, ToolService
from .upstream import UpstreamClient
from .upstream.budget import RequestBudget
from .webhooks import Sender, WebhookService

log = logging.getLogger("avatar_server")

ENGINE_PREFIX = "/engine"
MAX_BODY = 64 * 1024


def upstream_target(settings: Settings, admin_token: str) -> tuple[str, str]:
    """(base URL, API key) of the upstream: Runway, or the embedded engine over loopback HTTP."""
    if settings.engine_mode:
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{settings.port}{ENGINE_PREFIX}", admin_token
    assert settings.runway_secret is not None
    return settings.runway_base_url, settings.runway_secret


def create_app(settings: Settings, *, engine_config: EngineConfig | None = None) -> web.Application:
    install_redaction()
    admin_token, generated = load_or_create_admin_token(settings)
    register_secret(admin_token)
    register_secret(settings.runway_secret)
    register_secret(settings.metrics_token)
    app = web.Application(
        middlewares=[middlewares.request_context, cors.cors, middlewares.errors, security.body_limits],
        client_max_size=MAX_BODY,
    )
    app[K.SETTINGS] = settings
    app[K.ADMIN_TOKEN] = admin_token
    app[K.SOCKETS] = set()
    app[K.METRICS] = Metrics()  # counters from the first request on; its Redis figures: _operations_ctx
    if generated:
        # printed once, to the console only (never logged through the logging system)
        print(f"avatar-server: generated an admin token in {settings.data_dir / 'admin-token'}", flush=True)

    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_sites_ctx)
    app.cleanup_ctx.append(_demo_ctx)
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_bus_ctx)
    app.cleanup_ctx.append(_sessions_ctx)
    app.cleanup_ctx.append(_catalog_ctx)
    app.cleanup_ctx.append(_operations_ctx)
    app.cleanup_ctx.append(_conversations_ctx)
    app.cleanup_ctx.append(_tools_ctx)
    app.on_shutdown.append(_close_sockets)
    app.on_response_prepare.append(security.add_security_headers)

    app.add_routes(health.routes)
    app.add_routes(sessions.routes)
    app.add_routes(room.routes)
    app.add_routes(signal.routes)
    app.add_routes(sites.routes)
    app.add_routes(avatars.routes)
    app.add_routes(documents.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(metrics.routes)
    app.add_routes(conversations.routes)
    app.add_routes(voices.routes)
    app.add_routes(openapi.routes)
    app.add_routes(pages.routes)

    if settings.engine_mode:
        engine = create_engine_app(
            engine_config or EngineConfig.from_env(os.environ),
            api_keys=lambda: (admin_token,),
            public_url=settings.base_url(),
            # the engine's avatars/documents share the server's Redis (opened by _redis_ctx at startup)
            catalog_store=lambda: EngineCatalogStore(app[K.REDIS].client),
        )
        app.add_subapp(ENGINE_PREFIX, engine)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[K.SETTINGS]
    handle = await open_redis(s.redis_url, s.data_dir)
    app[K.REDIS] = handle
    yield
    await handle.close()


async def _sites_ctx(app: web.Application) -> AsyncIterator[None]:
    app[K.SITES] = SiteStore(app[K.REDIS].client)
    app[K.RATE_LIMITER] = RateLimiter(app[K.REDIS].client)
    yield


async def _demo_ctx(app: web.Application) -> AsyncIterator[None]:
    """The /demo page's site (created at start when the demo is on; see ``avatar_server.demo``)."""
    app[K.DEMO] = DemoSiteRef(app[K.REDIS].client)
    try:
        await ensure_demo_site(app[K.SETTINGS], app[K.SITES], app[K.DEMO])
    except Exception as exc:  # the demo is optional: never keep the server from serving
        log.warning("the demo site could not be prepared (%s); /demo is unavailable", type(exc).__name__)
    yield


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upstream client, behind the deployment's request budget (shared through Redis)."""
    s = app[K.SETTINGS]
    base, key = upstream_target(s, app[K.ADMIN_TOKEN])
    budget = RequestBudget(BudgetStore(app[K.REDIS].client).take, s.upstream_max_rps)
    client = UpstreamClient(
        base_url=base, api_secret=key, read_timeout=s.upstream_timeout, gate=budget.acquire,
        # enough connections for a second of the budget in flight, bounded
        max_connections=max(20, min(400, 2 * s.upstream_max_rps)),
        observe=app[K.METRICS].upstream_request,
    )
    app[K.BUDGET] = budget
    app[K.UPSTREAM] = client
    yield
    budget.close()
    await client.close()


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    bus = EventBus(app[K.REDIS].client)
    await bus.start()
    app[K.BUS] = bus
    yield
    await bus.close()


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[K.SETTINGS]
    redis = app[K.REDIS].client
    store = SessionStore(redis)
    room = WaitingRoom(RoomStore(redis), configured_limit=s.upstream_concurrency, size=s.waiting_room_size,
                       cap_seconds=s.cap_seconds, enabled=s.waiting_room, ends_of=store.ends_of)
    upstream = app[K.UPSTREAM]
    load = LoadMonitor(max_lag=s.overload_lag, pools={
        "redis": lambda: pool_in_use(redis),
        "upstream": lambda: upstream.in_flight / upstream.max_connections,
    })
    service = SessionService(
        store=store,
        bus=app[K.BUS],
        upstream=upstream,
        room=room,
        budget=app[K.BUDGET],
        config=LifecycleConfig(
            cap_seconds=s.cap_seconds,
            provision_timeout=s.provision_timeout,
            ready_timeout=s.ready_timeout,
            abandon_grace=s.abandon_grace,
            upstream_check_interval=s.upstream_check_interval,
            lease_seconds=s.lease_seconds,
        ),
    )
    timers = TimerLoop(service)
    app[K.SESSIONS] = service
    app[K.TIMERS] = timers
    app[K.BROKER] = SignalBroker(service, ice_servers=s.ice_servers)
    app[K.LOAD] = load
    load.start()
    timers.start()
    service.reconciler.start()  # the create journal's sweep (sessions.reconcile)
    yield
    await timers.close()
    await service.close()
    await room.close()
    await load.close()


async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    """Avatars and documents (forwarded upstream; links and token budget in Redis). Sessions of a
    custom avatar are refused before they are created unless the avatar is READY."""
    sessions = app[K.SESSIONS]
    redis = app[K.REDIS].client
    service = CatalogService(
        store=CatalogStore(redis),
        lock=CatalogLock(redis),
        upstream=app[K.UPSTREAM],
        end_sessions=sessions.end_sessions_of_avatar,
    )
    app[K.CATALOG] = service
    app[K.ADMISSION] = Admission(sessions=sessions, sites=app[K.SITES], load=app[K.LOAD],
                                 avatar_check=service.avatars.check_session_avatar)
    yield


async def _conversations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Conversations (recorded as sessions that reached RUNNING end; their upstream transcripts
    fetched by one loop per instance) and the usage ledger."""
    store = ConversationStore(app[K.REDIS].client)
    service = ConversationService(store=store, upstream=app[K.UPSTREAM],
                                  retention_days=app[K.SETTINGS].conversation_retention_days)
    app[K.CONVERSATIONS] = service
    app[K.USAGE] = UsageService(store=store, upstream=app[K.UPSTREAM])
    app[K.SESSIONS].observe(service)
    service.on_kept(app[K.WEBHOOKS].conversation_ready)  # the conversation.ready webhook
    service.start()
    yield
    await service.close()


async def _operations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Metrics (the deployment's figures read from Redis at scrape time; counters per instance) and
    webhooks (the outbox and this instance's delivery loop); both hear sessions as observers."""
    s = app[K.SETTINGS]
    redis = app[K.REDIS].client
    sessions = app[K.SESSIONS]
    metrics = app[K.METRICS]
    outbox = OutboxStore(redis)
    metrics.sources = Sources(sessions=DeploymentFigures(redis).sessions, room=sessions.room.snapshot,
                              webhook_backlog=outbox.backlog, room_size=s.waiting_room_size)
    app[K.ADMISSION].outcomes = metrics.session_start
    hooks = WebhookService(outbox=outbox, sites=app[K.SITES], consumer=sessions.instance_id,
                           sender=Sender(timeout=s.webhook_timeout, allow_private=s.allow_private_targets),
                           retry_base=s.webhook_retry_seconds, observe=metrics.webhook_attempt)
    app[K.WEBHOOKS] = hooks
    sessions.observe(MetricsObserver(metrics))
    sessions.observe(hooks)
    hooks.start()
    yield
    await hooks.close()


async def _tools_ctx(app: web.Application) -> AsyncIterator[None]:
    """Backend tools (``avatar_server.tools``): a session with backend_rpc tools gets a channel to the
    upstream (connect_backend) held by the instance that started it; calls go to the site's backend."""
    s = app[K.SETTINGS]
    sites = app[K.SITES]
    backend = SiteBackend(allow_private=s.allow_private_targets)
    try:  # Runway's channel is a LiveKit room (tools/livekit_rpc.py); without the SDK, calls go unanswered
        from .tools.livekit_rpc import hold_room as livekit
    except ImportError:
        livekit = None
    service = ToolService(upstream=app[K.UPSTREAM], backend=backend,
                          handler=ToolHandler(backend, sites.webhook_secret,
                                                          observe=app[K.METRICS].tool_call),
                          livekit=livekit)
    app[K.TOOLS] = service
    app[K.SESSIONS].observe(service)
    yield
    await service.close()


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[K.SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")
