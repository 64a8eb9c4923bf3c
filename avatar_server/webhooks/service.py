"""Webhooks to each site's backend: events into a durable outbox, delivered at least once.

Events (the body is ``{"type", "timestamp", "data"}``; docs/operations.md, "Webhooks"):

- ``session.started`` — the credentials went to the visitor (RUNNING);
- ``session.ended`` — a session that had started ended (``endReason``, ``durationSeconds`` =
  ``endedAt − startedAt``). A session that never started (refused upstream, timed out waiting or
  provisioning, left before READY) sends nothing: every ``session.started`` is followed by exactly
  one ``session.ended`` and nothing else is, so a backend can bill and log from the pairs;
- ``conversation.ready`` — the conversations service kept the session's conversation for good
  (transcript fetched, or given up on: ``status``); read it at ``GET /v1/conversations/{id}``.

Only sessions started with a site's publishable key have a site; a site without ``webhookUrl``
gets nothing. An event is written to the outbox (``store.outbox``) by the instance that saw it,
on the observer's own task, so a slow receiver never delays a session.

Delivery: every instance runs one loop (``start``) that moves due retries back into the outbox
stream, reads new entries through the consumer group, and takes over entries pending longer than
``stale_after`` (their instance died mid-attempt). Each entry is attempted on a task of its own,
at most ``per_site`` at a time per site on this instance (an entry of a site that has that many in
flight is put back for a moment, so a slow or dead endpoint holds only its own deliveries) and at
most ``max_in_flight`` in all, each bounded by the sender's total timeout. A 2xx is delivered;
anything else (another status, a timeout, a refused connection) is retried with the same
``webhook-id`` and body after ``retry_base · 2^(n−1)`` seconds (at most an hour), jittered to
between half and all of it, until ``retry_for`` (24 h) after the event; the next attempt past that
marks the delivery ``failed``. ``redeliver`` makes one due again at once (same id, a fresh 24 h).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..logs import register_secret
from ..models.sessions import SessionRecord, iso
from ..store.health import store_unavailable
from ..store.outbox import OutboxStore
from ..store.sites import SiteStore
from .sender import Sender
from .signing import signed_headers

log = logging.getLogger("avatar_server.webhooks")

EVENTS = ("session.started", "session.ended", "conversation.ready")
POLL = 0.1  # s between reads of the outbox
CLAIM_EVERY = 5.0  # s between looks for entries a dead instance left pending
DEFER = 0.5  # s an entry of a site with enough in flight waits before it is read again
MAX_DELAY = 3600.0
RETRY_FOR = 24 * 3600.0


def new_delivery_id() -> str:
    """A Standard Webhooks message id: ``msg_`` + 32 hex digits."""
    return "msg_" + uuid.uuid4().hex


class WebhookService:
    def __init__(
        self,
        *,
        outbox: OutboxStore,
        sites: SiteStore,
        sender: Sender,
        consumer: str,
        retry_base: float = 5.0,
        retry_for: float = RETRY_FOR,
        per_site: int = 4,
        max_in_flight: int = 64,
        observe: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.sites = sites
        self.sender = sender
        self.consumer = consumer
        self.retry_base = retry_base
        self.retry_for = retry_for
        self.per_site = per_site
        self.max_in_flight = max_in_flight
        self.stale_after = sender.timeout + 30.0  # longer than any attempt can take
        self.observe = observe
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._site_in_flight: dict[str, int] = {}
        self._next_claim = 0.0
        self._closed = False

    # --- events (a session observer) --------------------------------------------------------
    async def session_started(self, rec: SessionRecord) -> None:
        await self.emit(rec.siteId, "session.started", {
            "sessionId": rec.id, "siteId": rec.siteId, "avatar": rec.avatar, "origin": rec.origin,
            "maxDuration": rec.maxDuration, "startedAt": iso(rec.startedAt), "endsAt": iso(rec.endsAt),
        })

    async def session_ended(self, rec: SessionRecord) -> None:
        if rec.startedAt is None:
            return  # never started: nothing was announced, nothing ends (see the module's doc)
        duration = max(0.0, (rec.endedAt or time.time()) - rec.startedAt)
        await self.emit(rec.siteId, "session.ended", {
            "sessionId": rec.id, "siteId": rec.siteId, "avatar": rec.avatar, "origin": rec.origin,
            "startedAt": iso(rec.startedAt), "endedAt": iso(rec.endedAt),
            "endReason": rec.endReason.value if rec.endReason else None,
            "durationSeconds": round(duration, 3),
        })

    async def conversation_ready(self, conv: dict[str, Any]) -> None:
        """A conversation kept for good (``ConversationService.on_kept``): its transcript fetched
        (``status`` ended or failed) or given up on (``unavailable``)."""
        await self.emit(conv.get("siteId"), "conversation.ready", {
            "conversationId": conv["id"], "sessionId": conv["id"], "siteId": conv.get("siteId"),
            "status": conv.get("status"), "endReason": conv.get("endReason"),
            "durationSeconds": conv.get("durationSeconds"),
        })

    async def emit(self, site_id: str | None, event: str, data: dict[str, Any]) -> str | None:
        """Queue ``event`` for the site's backend; returns the delivery id (None: no site, or no URL)."""
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        if site_id is None:
            return None
        site = await self.sites.get(site_id)
        if site is None or not site.webhookUrl:
            return None
        now = time.time()
        did = new_delivery_id()
        body = json.dumps({"type": event, "timestamp": iso(now), "data": data}, separators=(",", ":"))
        await self.outbox.enqueue({
            "id": did, "siteId": site_id, "event": event, "body": body, "status": "pending", "attempts": 0,
            "createdAt": now, "retryUntil": now + self.retry_for, "nextAttemptAt": now, "lastAttemptAt": None,
            "deliveredAt": None, "lastStatus": None, "lastError": None,
        })
        log.info("webhook queued: %s %s", event, did, extra={"site_id": site_id})
        return did

    # --- what the admin API reads and asks ----------------------------------------------------
    async def deliveries(self, site_id: str, limit: int) -> list[dict[str, Any]]:
        """The site's latest ``limit`` deliveries, newest first."""
        return await self.outbox.for_site(site_id, limit)

    async def redeliver(self, delivery_id: str, *, site_id: str | None = None) -> dict[str, Any] | None:
        """Make the delivery due again at once (same webhook-id and body; a settled one gets a fresh
        ``retry_for``): its record, or None if there is no such delivery (of ``site_id``, if given)."""
        if site_id is not None:
            current = await self.outbox.get(delivery_id)
            if current is None or current.get("siteId") != site_id:
                return None
        return await self.outbox.redeliver(delivery_id, self.retry_for)

    # --- the delivery loop --------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="webhook-outbox")

    async def _run(self) -> None:
        await self._retrying(self.outbox.ensure_group)
        while not self._closed:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if store_unavailable(exc) is None:
                    log.exception("webhook outbox poll failed")
                    await asyncio.sleep(1.0)
            await asyncio.sleep(POLL)

    async def _retrying(self, step: Callable[[], Any]) -> None:
        while not self._closed:
            try:
                await step()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if store_unavailable(exc) is None:
                    log.warning("webhook outbox not ready (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def poll(self) -> None:
        """One pass: due retries back into the stream, stale entries taken over, new ones read."""
        now = time.time()
        await self.outbox.move_due(now)
        room = self.max_in_flight - len(self._attempts)
        if room <= 0:
            return
        entries: list[tuple[str, dict[str, str]]] = []
        if now >= self._next_claim:
            self._next_claim = now + CLAIM_EVERY
            entries += await self.outbox.claim_stale(self.consumer, self.stale_after, room)
        if len(entries) < room:
            entries += await self.outbox.read(self.consumer, room - len(entries))
        for entry, fields in entries:
            did, site = fields.get("id", ""), fields.get("site", "")
            if self._site_in_flight.get(site, 0) >= self.per_site:
                await self.outbox.defer(entry, did, site, time.time() + DEFER)
                continue
            self._site_in_flight[site] = self._site_in_flight.get(site, 0) + 1
            task = asyncio.create_task(self._attempt(entry, did, site), name=f"webhook-{did}")
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    async def _attempt(self, entry: str, delivery_id: str, site_id: str) -> None:
        try:
            await self.attempt(entry, delivery_id)
        except asyncio.CancelledError:
            raise  # stays pending: taken over after ``stale_after``
        except Exception as exc:
            if store_unavailable(exc) is None:
                log.exception("webhook attempt failed", extra={"site_id": site_id})
        finally:
            left = self._site_in_flight.get(site_id, 1) - 1
            if left > 0:
                self._site_in_flight[site_id] = left
            else:
                self._site_in_flight.pop(site_id, None)

    async def attempt(self, entry: str, delivery_id: str) -> None:
        """Attempt one delivery and record the outcome (delivered, a retry at its time, or failed)."""
        d = await self.outbox.get(delivery_id)
        if d is None or d.get("status") != "pending":
            await self.outbox.drop(entry)  # gone (retention) or settled meanwhile
            return
        site = await self.sites.get(d["siteId"])
        secret = await self.sites.webhook_secret(d["siteId"]) if site is not None else None
        now = time.time()
        if site is None or not site.webhookUrl or not secret:
            why = ("the site was deleted" if site is None else "the site has no webhook URL any more"
                   if not site.webhookUrl else "the site has no webhook secret (rotate it)")
            d.update(status="failed", lastError=why, nextAttemptAt=None)
            await self.outbox.record(entry, d)
            self._observe("failed")
            log.warning("webhook failed: %s %s: %s", d["event"], delivery_id, why, extra={"site_id": d["siteId"]})
            return
        register_secret(secret)  # never in a log line, whichever instance signs
        outcome = await self.sender.post(site.webhookUrl, d["body"], signed_headers(secret, d["id"], d["body"], now))
        d["attempts"] = int(d.get("attempts") or 0) + 1
        d.update(lastAttemptAt=now, lastStatus=outcome.status, lastError=outcome.error)
        if outcome.ok:
            d.update(status="delivered", deliveredAt=time.time(), nextAttemptAt=None)
            await self.outbox.record(entry, d)
            self._observe("delivered")
            log.info("webhook delivered: %s %s (attempt %d)", d["event"], delivery_id, d["attempts"],
                     extra={"site_id": d["siteId"]})
            return
        due = time.time() + self.backoff(d["attempts"])
        if due > float(d.get("retryUntil") or 0):
            d.update(status="failed", nextAttemptAt=None)
            await self.outbox.record(entry, d)
            self._observe("failed")
            log.warning("webhook failed after %d attempts: %s %s: %s", d["attempts"], d["event"], delivery_id,
                        outcome.error, extra={"site_id": d["siteId"]})
            return
        d["nextAttemptAt"] = due
        await self.outbox.record(entry, d, retry_at=due)
        self._observe("retry")
        log.info("webhook attempt %d of %s %s: %s; next in %.1f s", d["attempts"], d["event"], delivery_id,
                 outcome.error, due - time.time(), extra={"site_id": d["siteId"]})

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: doubling from ``retry_base``, at most an hour,
        jittered to between half and all of it (so receivers coming back are not hit all at once)."""
        ceiling = min(MAX_DELAY, self.retry_base * 2 ** max(0, attempts - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _observe(self, outcome: str) -> None:
        if self.observe is not None:
            with contextlib.suppress(Exception):
                self.observe(outcome)

    async def close(self) -> None:
        """Stop reading; attempts in flight are cancelled (their entries stay pending and are taken
        over after ``stale_after`` by whichever instance runs then)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        attempts = list(self._attempts)
        if attempts:
            await asyncio.wait(attempts, timeout=1.0)
        for task in list(self._attempts):
            task.cancel()
        if self._attempts:
            await asyncio.wait(list(self._attempts), timeout=2.0)
        await self.sender.close()
