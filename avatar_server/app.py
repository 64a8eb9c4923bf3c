"""``create_app(settings)``: builds the whole server. Tests call the same factory.

Every resource comes from a ``cleanup_ctx`` generator, so startup and cleanup are paired
and cleanup always runs, in reverse order: Redis → upstream client → event bus →
session service → timer loop. Long-lived WebSockets are closed in ``on_shutdown``.
"""

from __future__ import annotations

import contextlib
import os
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import appkeys as K
from .api import cors, health, middlewares, openapi, security, sessions, signal, sites
from .engine.api import create_engine_app
from .engine.config import EngineConfig
from .logs import install_redaction, register_secret
from .sessions.service import LifecycleConfig, SessionService
from .sessions.timers import TimerLoop
from .settings import Settings, load_or_create_admin_token
from .signalling.broker import SignalBroker
from .store.connection import open_redis
from .store.events import EventBus
from .store.ratelimit import RateLimiter
from .store.sessions import SessionStore
from .store.sites import SiteStore
from .upstream import UpstreamClient

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
    app = web.Application(
        middlewares=[middlewares.request_context, cors.cors, middlewares.errors, security.body_limits],
        client_max_size=MAX_BODY,
    )
    app[K.SETTINGS] = settings
    app[K.ADMIN_TOKEN] = admin_token
    app[K.SOCKETS] = set()
    if generated:
        # printed once, to the console only (never logged through the logging system)
        print(f"avatar-server: generated an admin token in {settings.data_dir / 'admin-token'}", flush=True)

    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_sites_ctx)
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_bus_ctx)
    app.cleanup_ctx.append(_sessions_ctx)
    app.on_shutdown.append(_close_sockets)
    app.on_response_prepare.append(security.add_security_headers)

    app.add_routes(health.routes)
    app.add_routes(sessions.routes)
    app.add_routes(signal.routes)
    app.add_routes(sites.routes)
    app.add_routes(openapi.routes)

    if settings.engine_mode:
        engine = create_engine_app(
            engine_config or EngineConfig.from_env(os.environ),
            api_keys=lambda: (admin_token,),
            public_url=settings.base_url(),
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


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    base, key = upstream_target(app[K.SETTINGS], app[K.ADMIN_TOKEN])
    client = UpstreamClient(base_url=base, api_secret=key, read_timeout=app[K.SETTINGS].upstream_timeout)
    app[K.UPSTREAM] = client
    yield
    await client.close()


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    bus = EventBus(app[K.REDIS].client)
    await bus.start()
    app[K.BUS] = bus
    yield
    await bus.close()


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[K.SETTINGS]
    service = SessionService(
        store=SessionStore(app[K.REDIS].client),
        bus=app[K.BUS],
        upstream=app[K.UPSTREAM],
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
    app[K.BROKER] = SignalBroker(service)
    timers.start()
    yield
    await timers.close()
    await service.close()


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[K.SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")
