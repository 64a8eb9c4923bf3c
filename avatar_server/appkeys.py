"""Typed application keys: everything the handlers reach through ``request.app``."""

from __future__ import annotations

from aiohttp import web

from .catalog.service import CatalogService
from .conversations import ConversationService, UsageService
from .metrics import Metrics
from .sessions.admission import Admission
from .sessions.load import LoadMonitor
from .sessions.service import SessionService
from .sessions.timers import TimerLoop
from .settings import Settings
from .signalling.broker import SignalBroker
from .store.connection import RedisHandle
from .store.demo import DemoSiteRef
from .store.events import EventBus
from .store.ratelimit import RateLimiter
from .store.sites import SiteStore
from .tools import ToolService
from .upstream import UpstreamClient
from .upstream.budget import RequestBudget
from .webhooks import WebhookService

SETTINGS = web.AppKey("settings", Settings)
ADMIN_TOKEN = web.AppKey("admin_token", str)
REDIS = web.AppKey("redis", RedisHandle)
BUS = web.AppKey("bus", EventBus)
UPSTREAM = web.AppKey("upstream", UpstreamClient)
SESSIONS = web.AppKey("sessions", SessionService)
TIMERS = web.AppKey("timers", TimerLoop)
BROKER = web.AppKey("broker", SignalBroker)
SOCKETS = web.AppKey("sockets", set)
SITES = web.AppKey("sites", SiteStore)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
DEMO = web.AppKey("demo", DemoSiteRef)
CATALOG = web.AppKey("catalog", CatalogService)
ADMISSION = web.AppKey("admission", Admission)
LOAD = web.AppKey("load", LoadMonitor)
BUDGET = web.AppKey("budget", RequestBudget)
CONVERSATIONS = web.AppKey("conversations", ConversationService)
USAGE = web.AppKey("usage", UsageService)
METRICS = web.AppKey("metrics", Metrics)
WEBHOOKS = web.AppKey("webhooks", WebhookService)
TOOLS = web.AppKey("tools", ToolService)
