"""Signed webhooks to each site's backend (Standard Webhooks), from a durable outbox in Redis.

``standardwebhooks`` is imported here only (``signing``), and this package's HTTP client is
aiohttp's (``sender``; httpx stays the upstream's). See ``service`` for the events and the
delivery rules, ``targets`` for where a webhook may go.
"""

from .sender import Outcome, Sender
from .service import EVENTS, WebhookService, new_delivery_id
from .targets import check_webhook_url

__all__ = ["EVENTS", "Outcome", "Sender", "WebhookService", "check_webhook_url", "new_delivery_id"]
