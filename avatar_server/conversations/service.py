"""Conversations: recorded when a session that reached RUNNING ends, completed from the upstream.

``session_ended`` (a ``SessionService`` observer, on a task of its own) writes our record at
once — ``siteId``, ``avatar``, ``startedAt``/``endedAt``, ``durationSeconds`` (ours), ``endReason``,
status ``pending`` — counts it in the usage ledger, and queues the upstream fetch in Redis. The
fetch loop (one per instance, owned by the app's cleanup context) claims due fetches, reads
``GET /v1/avatar_conversations/{upstreamId}``, and retries with backoff (1, 2, 4 … 60 s, at most
``MAX_ATTEMPTS`` tries, about five minutes) until the upstream says ``ended`` or ``failed``; then
the transcript, recording URL and the upstream's duration are kept. If it never does, the
conversation stays, ``unavailable``, without a transcript. Nothing here ever delays a session:
the observer only writes to Redis, and every upstream call is on the loop's tasks, behind the
request budget's lowest class.

The record lives ``AVATAR_SERVER_CONVERSATION_RETENTION_DAYS`` after the session ended (a Redis
TTL), then it is gone everywhere. ``delete`` erases ours and asks the upstream to erase its copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import AvatarServerError, NotFound
from ..models.sessions import SessionRecord, iso
from ..store.conversations import ConversationStore, avatar_key, index_scopes
from ..upstream import UpstreamClient

log = logging.getLogger("avatar_server.conversations")

FIRST_FETCH_DELAY = 1.0  # seconds after the end: the upstream closes its conversation in the meantime
MAX_ATTEMPTS = 10
MAX_BACKOFF = 60.0
TICK = 0.25
CLAIM_HOLD = 30.0  # a claimed fetch comes due again after this, should its instance die
IN_FLIGHT = 4  # upstream fetches at once per instance
FETCH_TIMEOUT = 20.0
TRANSCRIPT_MAX = 1000
CONTENT_MAX = 20_000
_UPSTREAM_DONE = {"ended", "failed"}


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def ledger_fields(site_id: str | None, avatar: str | None, seconds: int, reason: str) -> dict[str, int]:
    """What one conversation adds to its day's ledger: every (site, avatar) combination with ``*``."""
    site = site_id or "-"
    fields: dict[str, int] = {}
    for s in ("*", site):
        for a in ("*", avatar or "-"):
            fields[f"{s}|{a}|sessions"] = 1
            fields[f"{s}|{a}|seconds"] = seconds
            fields[f"{s}|{a}|reason:{reason}"] = 1
    return fields


class ConversationService:
    def __init__(self, *, store: ConversationStore, upstream: UpstreamClient, retention_days: float) -> None:
        self.store = store
        self.upstream = upstream
        self.retention = retention_days * 86_400
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._fetches: set[asyncio.Task[None]] = set()
        self._closed = False
        self._listeners: list[Callable[[dict[str, Any]], Awaitable[None]]] = []

    def on_kept(self, listener: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """``listener(conversation)`` is awaited once a conversation is kept for good (its upstream
        transcript fetched, or given up on): the hook for the ``conversation.ready`` webhook."""
        self._listeners.append(listener)

    async def _kept(self, conv: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                await listener(conv)
            except Exception:
                log.exception("a conversation listener failed", extra={"session_id": conv["id"]})

    # -- the session observer ------------------------------------------------------------------

    async def session_started(self, rec: SessionRecord) -> None:
        return None

    async def session_ended(self, rec: SessionRecord) -> None:
        if rec.startedAt is None:
            return  # never RUNNING: no conversation (and nothing billed)
        ended = rec.endedAt or time.time()
        duration = max(0, round(ended - rec.startedAt))
        reason = rec.endReason.value if rec.endReason else "error"
        conv = {
            "id": rec.id,
            "upstreamId": rec.upstreamId,
            "siteId": rec.siteId,
            "avatar": dict(rec.avatar),
            "startedAt": iso(rec.startedAt),
            "endedAt": iso(ended),
            "durationSeconds": duration,
            "upstreamDurationSeconds": None,
            "endReason": reason,
            "status": "pending" if rec.upstreamId else "unavailable",
            "recordingUrl": None,
            "transcript": [],
        }
        await self.store.record(
            conv, ttl_seconds=max(1.0, ended + self.retention - time.time()), score_ms=int(rec.startedAt * 1000),
            due=time.time() + FIRST_FETCH_DELAY if rec.upstreamId else -1, day=day_of(rec.startedAt),
            ledger=ledger_fields(rec.siteId, avatar_key(rec.avatar), duration, reason))
        # index members past the retention (their records expired): trimmed a day late, and skipped anyway
        await self.store.trim(index_scopes(conv), int((time.time() - self.retention - 86_400) * 1000))
        self._wake.set()

    # -- reads and deletes ---------------------------------------------------------------------

    async def get(self, conv_id: str) -> dict[str, Any] | None:
        conv = await self.store.get(conv_id)
        if conv is None:
            return None
        return await self._with_expiry(conv)

    async def page(
        self, *, site_id: str | None, avatar_id: str | None, limit: int, before: tuple[int, str] | None,
        start: datetime | None, end: datetime | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` conversations, newest first (by ``startedAt``), strictly after ``before``
        (``(startedAt ms, id)`` of the last one shown), started in ``[start, end)``, of the site
        ``site_id`` (``"admin"``: started with the admin token) and of the avatar ``avatar_id``
        (a preset's or a custom avatar's id), if given; and whether more follow."""
        if avatar_id is not None:
            scope = f"avatar:{avatar_id}"
        elif site_id is not None:
            scope = "admin" if site_id == "admin" else f"site:{site_id}"
        else:
            scope = "all"

        def admit(conv: dict[str, Any]) -> bool:
            if site_id == "admin":
                return conv.get("siteId") is None
            if site_id is not None and conv.get("siteId") != site_id:
                return False
            return avatar_id is None or avatar_key(conv.get("avatar")) == avatar_id

        # ``end`` is exclusive: the newest admitted start is a millisecond before it
        return await self.store.page(
            scope, limit=limit, before=before, admit=admit,
            min_ms=int(start.timestamp() * 1000) if start else None,
            max_ms=int(end.timestamp() * 1000) - 1 if end else None)

    async def _with_expiry(self, conv: dict[str, Any]) -> dict[str, Any]:
        ttl = await self.store.ttl_ms(conv["id"])
        conv["expiresAt"] = iso(time.time() + ttl / 1000) if ttl > 0 else None
        return conv

    async def delete(self, conv_id: str) -> dict[str, Any] | None:
        """Erase ours, then ask the upstream to erase its copy: ``{id, deleted, upstream, upstreamMessage}``,
        or None if we had no such conversation."""
        conv = await self.store.delete(conv_id)
        if conv is None:
            return None
        outcome, message = "none", None
        upstream_id = conv.get("upstreamId")
        if upstream_id:
            try:
                outcome = "deleted" if await self.upstream.delete_conversation(upstream_id) else "not_found"
            except AvatarServerError as exc:
                outcome, message = "refused", exc.message
                log.warning("the upstream did not delete a conversation: %s", exc.code,
                            extra={"session_id": conv_id, "upstream_id": upstream_id})
        return {"id": conv_id, "deleted": True, "upstream": outcome, "upstreamMessage": message}

    # -- the fetch loop ------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None and not self._closed:
            self._loop_task = asyncio.create_task(self._run(), name="conversation-fetches")

    async def close(self) -> None:
        """Stop the loop and any fetch in flight (their claims come due again elsewhere); idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._loop_task, *self._fetches) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while not self._closed:
            try:
                room = IN_FLIGHT - len(self._fetches)
                if room > 0:
                    for conv_id in await self.store.claim_due(time.time(), room, CLAIM_HOLD):
                        task = asyncio.create_task(self._fetch(conv_id))
                        self._fetches.add(task)
                        task.add_done_callback(self._fetches.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: try again on the next tick
                log.warning("conversation fetch loop: %s", type(exc).__name__)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK)

    async def _fetch(self, conv_id: str) -> None:
        conv = await self.store.get(conv_id)
        if conv is None or not conv.get("upstreamId"):
            await self.store.fetched(conv_id)
            return
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                remote = await self.upstream.get_conversation(conv["upstreamId"])
        except (AvatarServerError, TimeoutError) as exc:
            remote = None
            reason = "not found" if isinstance(exc, NotFound) else type(exc).__name__
        else:
            reason = f"status {remote.get('status')!r}"
        if remote is not None and remote.get("status") in _UPSTREAM_DONE:
            await self._complete(conv, remote)
            return
        attempts = await self.store.retry(conv_id, time.time(), MAX_BACKOFF)
        if attempts >= MAX_ATTEMPTS:
            log.warning("the upstream's conversation never ended (%s): kept without its transcript", reason,
                        extra={"session_id": conv_id, "upstream_id": conv["upstreamId"]})
            conv["status"] = "unavailable"
            await self.store.fetched(conv_id)
            if await self.store.update(conv):
                await self._kept(conv)

    async def _complete(self, conv: dict[str, Any], remote: dict[str, Any]) -> None:
        conv["status"] = remote["status"]
        conv["transcript"] = clean_transcript(remote.get("transcript"))
        url = remote.get("recordingUrl")
        conv["recordingUrl"] = url if isinstance(url, str) and url.startswith("https://") else None
        duration = remote.get("duration")
        conv["upstreamDurationSeconds"] = duration if isinstance(duration, int) and not isinstance(duration, bool) \
            else None
        await self.store.fetched(conv["id"])
        if await self.store.update(conv):  # a conversation deleted meanwhile stays deleted
            await self._kept(conv)


def clean_transcript(raw: Any) -> list[dict[str, Any]]:
    """The upstream's transcript, kept to Runway's entry keys and sane sizes."""
    out: list[dict[str, Any]] = []
    if not isinstance(raw, list):
        return out
    for entry in raw[:TRANSCRIPT_MAX]:
        if not isinstance(entry, dict) or entry.get("role") not in ("user", "assistant"):
            continue
        content = entry.get("content")
        stamp = entry.get("timestamp")
        turn: dict[str, Any] = {
            "role": entry["role"],
            "content": content[:CONTENT_MAX] if isinstance(content, str) else None,
            "timestamp": stamp if isinstance(stamp, str) and len(stamp) <= 40 else None,
        }
        for key in ("toolCalls", "toolResults"):
            value = entry.get(key)
            if isinstance(value, list):
                turn[key] = [v for v in value if isinstance(v, dict)][:50]
        out.append(turn)
    return out
