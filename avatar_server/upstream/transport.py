"""The plumbing under every upstream call: one httpx client, the request budget's gate, retries.

The only module that holds an httpx client. Every call carries ``Authorization: Bearer
<secret>`` (consume: the session key instead), ``X-Runway-Version`` and an ``X-Request-Id``
correlation id that stays the same across retries of one call. Every attempt first waits for a
token of the request budget (``gate``, ``upstream.budget``) and is told to ``observe`` (metrics).

Retries (policy in ``retry.py``): idempotent calls (GET, DELETE) are retried on
408/429/502/503/504, connection errors and timeouts, with full-jitter exponential backoff,
honouring ``Retry-After``, bounded by attempts and total time. 400/401/403/404/409/422 are never
retried.

Non-idempotent calls — ``POST /v1/realtime_sessions`` (create),
``POST /v1/realtime_sessions/{id}/consume`` and the catalogue's creates — are different. Runway
has no idempotency key, and a create that happened twice is a second *billed* session; a consume
is one-time. So such a call is sent again only when we know the upstream did not act on it:

* it answered a refusal status (408, 429, 503): the request was turned away;
* the connection was never established (``ConnectError``, ``ConnectTimeout``) or no pooled
  connection was obtained (``PoolTimeout``): nothing was sent.

Everything else after the request may have left the machine is *ambiguous*: a read/write
timeout, a connection dropped mid-request (``RemoteProtocolError``, ``ReadError``...), a
500/502/504 (a gateway may have forwarded the request before failing), a 200 whose body we cannot
read, or cancellation of the awaiting task. Those raise ``UpstreamAmbiguous`` without retry
(``failures.ambiguous``). What each answer becomes: ``failures.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Self
from urllib.parse import quote

import httpx

from avatar_server.errors import NotFound, UpstreamError
from avatar_server.upstream.failures import (
    ambiguous,
    describe,
    exhausted,
    malformed,
    status_error,
    upstream_message,
)
from avatar_server.upstream.retry import (
    CREATE_RETRYABLE_STATUSES,
    RETRYABLE_STATUSES,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
)

logger = logging.getLogger("avatar_server.upstream")

USER_AGENT = "avatar-server/0.1"

# A budget token older than this when its request gets a connection is replaced by a fresh one:
# the budget's window (1.2 s) is this much (and a margin for the event loop) longer than a second.
TOKEN_FRESH = 0.15

# Errors raised before any byte of the request could reach the upstream.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Transport:
    """Sends upstream requests. ``close()`` is idempotent; a closed transport sends nothing."""

    def __init__(
        self,
        *,
        base_url: str,
        api_secret: str,
        version: str = "2024-11-06",
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        gate: Callable[[str], Awaitable[None]] | None = None,
        max_connections: int = 100,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        if not api_secret:
            raise ValueError("api_secret is required")
        self._secret = api_secret
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.stats: dict[str, int] = {"total": 0}
        # every attempt waits for a token of the request budget (``upstream.budget``), if any
        self._gate = gate
        # hears every attempt: (op, HTTP status or "timeout"/"error"/"cancelled", seconds) — metrics
        self.observe = observe
        self.in_flight = 0  # attempts waiting for a connection or on one
        self.max_connections = max_connections
        # a request holds one of these while on a connection, so httpx never queues one itself
        self._connections = asyncio.Semaphore(max_connections)
        self._pool_timeout = connect_timeout
        self.stale_tokens = 0  # budget tokens replaced because their request waited for a connection
        self._closed = False
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            headers={"X-Runway-Version": version, "User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never the secret
        return f"{type(self).__name__}(base_url={str(self._http.base_url)!r}, closed={self._closed})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._http.aclose()

    # -- any call ----------------------------------------------------------

    # -- shapes of answers (for the calls of ``sessions`` and ``catalog``) ---

    async def _create(self, path: str, body: dict[str, Any], op: str) -> dict[str, Any]:
        """A non-idempotent POST that answers an object with an ``id``."""
        resp, request_id = await self._send(
            "POST", path, op=op, json=body, retry_statuses=CREATE_RETRYABLE_STATUSES, non_idempotent=True
        )
        try:
            data = resp.json()
        except ValueError as exc:
            raise ambiguous(op, "POST", path, request_id, body, "unreadable 200 body") from exc
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ambiguous(op, "POST", path, request_id, body, "200 body without an id")
        return data

    async def _object(
        self, method: str, path: str, op: str, json: Any = None, params: dict[str, Any] | None = None,
        *, required: str | None = None,
    ) -> dict[str, Any]:
        """A JSON object (with a list at ``required``, if named: a page's ``data``)."""
        resp, _ = await self._send(method, path, op=op, json=json, params=params)
        try:
            data = resp.json()
        except ValueError as exc:
            raise malformed(op, exc) from exc
        if not isinstance(data, dict):
            raise malformed(op, TypeError("not an object"))
        if required is not None and not isinstance(data.get(required), list):
            raise malformed(op, TypeError("not a page" if required == "data" else f"no {required}"))
        return data

    async def _page(self, path: str, op: str, limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return await self._object("GET", path, op, params=params, required="data")

    async def _delete(self, path: str, op: str, retry_statuses: frozenset[int] = RETRYABLE_STATUSES) -> bool:
        """True if deleted, False if the upstream says 404 (already gone)."""
        try:
            await self._send("DELETE", path, op=op, retry_statuses=retry_statuses)
        except NotFound:
            return False
        return True

    async def _probe(self, path: str, timeout: float) -> int | None:
        """One GET, no retries, no gate: the status, or None if no answer came within ``timeout``."""
        self._ensure_open()
        self._count("ping")
        try:
            async with asyncio.timeout(timeout):
                resp = await self._http.get(
                    path,
                    headers=self._headers(self._secret, uuid.uuid4().hex),
                    timeout=httpx.Timeout(timeout),
                )
        except (httpx.HTTPError, TimeoutError):
            return None
        return resp.status_code

    # -- internals ---------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("UpstreamClient is closed")

    def _count(self, op: str) -> None:
        self.stats[op] = self.stats.get(op, 0) + 1
        self.stats["total"] += 1

    def _headers(self, bearer: str, request_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {bearer}", "X-Request-Id": request_id}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        op: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        bearer: str | None = None,
        retry_statuses: frozenset[int] = RETRYABLE_STATUSES,
        non_idempotent: bool = False,
        reconcile: dict[str, Any] | None = None,
        prepaid_at: float | None = None,
    ) -> tuple[httpx.Response, str]:
        """Send with retries; return the 2xx response and the request id, or raise a mapped error.

        ``prepaid_at``: the caller already holds a budget token for the first attempt, bought at
        this ``time.monotonic()``."""
        self._ensure_open()
        request_id = uuid.uuid4().hex
        headers = self._headers(bearer if bearer is not None else self._secret, request_id)
        budget = RetryBudget(self.retry, self._rng)
        context = reconcile if reconcile is not None else json

        while True:
            self._ensure_open()
            if prepaid_at is not None and budget.attempts == 0:
                took = prepaid_at  # the token bought (in bulk) by the caller
            else:
                if self._gate is not None:
                    await self._gate(op)
                took = time.monotonic()  # when the attempt's token was taken
            budget.attempts += 1
            self._count(op)
            status: int | None = None
            retry_after: float | None = None
            failure: str
            timed_out = False
            self.in_flight += 1
            try:
                await self._connection(op, took)
                try:
                    resp = await self._attempt(op, method, path, json=json, params=params, headers=headers)
                finally:
                    self._connections.release()
            except _NOT_SENT_ERRORS as exc:
                failure = describe(exc)
                timed_out = isinstance(exc, httpx.TimeoutException)
            except httpx.TransportError as exc:  # may have been sent: timeouts, dropped connections
                failure = describe(exc)
                if non_idempotent:
                    raise ambiguous(op, method, path, request_id, context, failure) from exc
                timed_out = isinstance(exc, httpx.TimeoutException)
            except httpx.HTTPError as exc:  # decoding errors and the like: not worth retrying
                if non_idempotent:
                    raise ambiguous(op, method, path, request_id, context, describe(exc)) from exc
                raise UpstreamError(f"upstream {op} failed: {describe(exc)}", code="upstream_error") from exc
            except asyncio.CancelledError:
                if non_idempotent:
                    ambiguous(op, method, path, request_id, context, "cancelled while in flight")
                raise
            else:
                if resp.is_success:
                    return resp, request_id
                status = resp.status_code
                message = upstream_message(resp)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if status not in retry_statuses:
                    if non_idempotent and status >= 500:
                        raise ambiguous(op, method, path, request_id, context, f"HTTP {status} {message}")
                    raise status_error(op, status, message, retry_after, budget.attempts)
                failure = f"HTTP {status} {message}".rstrip()
            finally:
                self.in_flight -= 1

            delay = budget.next_delay(retry_after)
            if delay is None:
                if status is not None:
                    raise status_error(op, status, message, retry_after, budget.attempts)
                raise exhausted(op, budget.attempts, failure, timed_out=timed_out)
            logger.info(
                "upstream retry op=%s attempt=%d/%d status=%s delay=%.3fs request_id=%s reason=%s",
                op,
                budget.attempts,
                self.retry.max_attempts,
                status if status is not None else "-",
                delay,
                request_id,
                failure[:120],
            )
            await self._sleep(delay)
            budget.record_sleep(delay)

    async def _connection(self, op: str, took: float) -> None:
        """Wait for one of ``max_connections`` (``PoolTimeout`` after the connect timeout). A token that
        went stale meanwhile is replaced: requests that all waited for connections, then leave
        together, would exceed the budget as the upstream counts arrivals (the flash-crowd bench
        saw 57 requests in its busiest second for a budget of 50)."""
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._connections.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no upstream connection was free") from None
        if self._gate is not None and time.monotonic() - took > TOKEN_FRESH:
            self.stale_tokens += 1
            try:
                await self._gate(op)
            except BaseException:
                self._connections.release()
                raise

    async def _attempt(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """One HTTP attempt, told to ``observe`` (if any) with its outcome and duration."""
        if self.observe is None:
            return await self._http.request(method, path, **kw)
        started = time.monotonic()
        outcome = "error"
        try:
            resp = await self._http.request(method, path, **kw)
            outcome = str(resp.status_code)
            return resp
        except httpx.TimeoutException:
            outcome = "timeout"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            try:
                self.observe(op, outcome, time.monotonic() - started)
            except Exception:  # an observer never fails a request
                logger.debug("upstream observer failed", exc_info=True)


def item_path(collection: str, item_id: str) -> str:
    """``<collection>/<id>``, the id quoted; ValueError for an empty id."""
    if not item_id:
        raise ValueError("an id is required")
    return f"{collection}/{quote(item_id, safe='')}"
