"""Session events over Redis pub/sub, so every instance's sockets hear every change.

One pattern subscription per process; a reader task fans messages out to local
``asyncio.Queue``s. Publishing never blocks on slow listeners (queues are bounded;
a full queue drops its oldest event, the socket re-reads the record anyway).

Events published while the subscription is down (a Redis restart, until it is back) are not
heard. So after every resubscription each listener gets ``RESYNC`` (``{"type": "resync"}``):
it re-reads the session's record, which Redis kept, and catches up (a missed ``ended`` among
them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError

from . import keys
from .connection import Redis
from .health import store_unavailable

log = logging.getLogger("avatar_server.events")

RESYNC: dict[str, Any] = {"type": "resync"}
"""Told to every listener after the subscription was lost and made again: events may be missed."""


class EventBus:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("event bus already started")
        self._task = asyncio.create_task(self._run(), name="event-bus")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _run(self) -> None:
        prefix_len = len(keys.events_channel(""))
        while not self._closed:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(keys.events_pattern())
                if self._ready.is_set():  # a resubscription: what was published meanwhile is lost
                    self._tell_all(RESYNC)
                # redis-py also reconnects a dropped subscription by itself, inside get_message,
                # and subscribes again (its own connect callback): hear of that too
                if pubsub.connection is not None:
                    pubsub.connection.register_connect_callback(self._reconnected)
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is None or msg.get("type") != "pmessage":
                        continue
                    session_id = str(msg["channel"])[prefix_len:]
                    queues = self._listeners.get(session_id)
                    if not queues:
                        continue
                    self._put(queues, json.loads(msg["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # a Redis outage is logged once by store.health; resubscribe as soon as it is back
                outage = store_unavailable(exc) is not None
                log.log(logging.DEBUG if outage else logging.WARNING,
                        "event bus lost its Redis subscription (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(0.2 if outage else 0.5)
            finally:
                if pubsub.connection is not None:  # the connection goes back to the pool: not ours to hear
                    pubsub.connection.deregister_connect_callback(self._reconnected)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    @staticmethod
    def _put(queues: set[asyncio.Queue[dict[str, Any]]], event: dict[str, Any]) -> None:
        for q in list(queues):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)

    def _reconnected(self, _connection: object) -> None:
        self._tell_all(RESYNC)

    def _tell_all(self, event: dict[str, Any]) -> None:
        for queues in list(self._listeners.values()):
            self._put(queues, event)

    async def publish(self, session_id: str, event: dict[str, Any]) -> None:
        await self.r.publish(keys.events_channel(session_id), json.dumps(event))

    @contextlib.asynccontextmanager
    async def listen(self, session_id: str, maxsize: int = 64) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self._listeners[session_id].add(q)
        try:
            yield q
        finally:
            qs = self._listeners.get(session_id)
            if qs is not None:
                qs.discard(q)
                if not qs:
                    del self._listeners[session_id]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
