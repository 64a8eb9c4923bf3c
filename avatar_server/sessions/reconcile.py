"""Reconciling upstream creates whose answer nobody recorded.

A ``POST /v1/realtime_sessions`` whose answer is lost — the instance died while it was in
flight, or the answer never came (``UpstreamAmbiguous``: a timeout, a dropped connection,
a 5xx) — may have started an upstream session that no session of ours knows: it would sit
READY, then expire, unseen. So every create is journalled first (``store.journal``:
session id, avatar, maxDuration, time, instance) and crossed out once the upstream id is
stored. An entry left behind is *open* when its create ended ambiguously, when its instance
is gone (its liveness key expired), or when it has been in flight longer than any create
can be. Open entries are reconciled against the upstream's conversation list
(``GET /v1/avatar_conversations?startDate=…``; a conversation's id is its realtime
session's id):

- a *candidate* is a conversation ``in_progress`` that no live session of ours owns (no
  active session has it as ``upstreamId``);
- it *matches* an entry if it is for the same avatar and was created within
  ``[at - skew, at + horizon]``;
- a candidate that also matches a create still in flight on a live instance is left alone
  for now (it may be that create's answer); the entry stays open and the next pass decides;
- **adopted**: when the create ended ambiguously on this instance and its session is
  still provisioning, and exactly one candidate matches it and no other entry, the
  session takes that upstream id and provisioning goes on (``after_ambiguous`` returns it);
- **cancelled**: every other matching candidate is cancelled (``DELETE
  /v1/realtime_sessions/{id}``) — after a crash always: the session has waited a lease
  with nobody polling, and cancelling is the safe default;
- **nothing found**: no candidate matched.

One INFO/WARNING line per decision (``create reconciled: …``). An entry stays open,
re-checked on every pass, until ``horizon`` after its create (an upstream may still act on a
request after we stopped waiting), then it is crossed out.

The work runs on this object's one background task (started by the app with the timer loop,
stopped by ``close()``), never on the timer loop: a slow upstream cannot delay a deadline.
One instance at a time reconciles (a lock in Redis). Ending the session itself stays with
its usual paths: ``Provisioner`` on an ambiguous create, ``SessionService.recover`` once
the dead instance's lease has expired, else the ``provision`` timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ..errors import AvatarServerError, UpstreamAmbiguous
from ..models.sessions import SessionRecord, SessionStatus, iso
from ..store.journal import IN_FLIGHT, OPEN, CreateIntent, CreateJournal
from ..store.sessions import SessionStore
from ..upstream import UpstreamClient

log = logging.getLogger("avatar_server.reconcile")

SKEW = 5.0  # seconds: the upstream's clock may differ from ours by this much
HORIZON = 60.0  # seconds after a create within which the upstream may still act on it
SWEEP_EVERY = 5.0  # seconds between passes (at most; a lease of less makes it shorter)
PASS_TIMEOUT = 25.0  # one pass (list, cancels) gives up after this; the lock lives a little longer
LOCK_WAIT = 3.0  # an ambiguous create waits this long for another instance's pass to finish
PAGE = 100
CANCELS_AT_ONCE = 8
MAX_PAGES = 20
LOG_IDS = 5


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def same_avatar(ours: dict[str, Any], theirs: Any) -> bool:
    """Our create body's avatar against a conversation's (an unknown avatar never matches)."""
    if not isinstance(theirs, dict):
        return False
    kind = ours.get("type")
    if kind != theirs.get("type"):
        return False
    if kind == "runway-preset":
        return bool(ours.get("presetId")) and ours.get("presetId") == theirs.get("presetId")
    if kind == "custom":
        mine, other = ours.get("avatarId"), theirs.get("id")
        return isinstance(mine, str) and isinstance(other, str) and mine.lower() == other.lower()
    return False


def matches(intent: CreateIntent, conversation: dict[str, Any], *, skew: float, horizon: float) -> bool:
    created = parse_time(conversation.get("createdAt"))
    if created is None or not intent.at - skew <= created <= intent.at + horizon:
        return False
    return same_avatar(intent.avatar, conversation.get("avatar"))


def _avatar_text(avatar: dict[str, Any]) -> str:
    return str(avatar.get("presetId") or avatar.get("avatarId") or avatar.get("type"))


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:LOG_IDS])
    return shown + (f" and {len(ids) - LOG_IDS} more" if len(ids) > LOG_IDS else "")


class CreateReconciler:
    """Journals creates and reconciles the ones whose answer was lost (see the module doc)."""

    def __init__(
        self,
        *,
        store: SessionStore,
        upstream: UpstreamClient,
        instance_id: str,
        lease_seconds: float,
        journal: CreateJournal | None = None,
        interval: float | None = None,
        horizon: float = HORIZON,
        skew: float = SKEW,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.instance = instance_id
        self.journal = journal or CreateJournal(store.r)
        self.alive_ttl = lease_seconds  # another instance takes over our open creates this long after we die
        self.beat_every = lease_seconds / 3
        self.interval = interval if interval is not None else min(SWEEP_EVERY, lease_seconds)
        self.horizon = horizon
        self.skew = skew
        self._ambiguous: dict[str, str] = {}  # session id → intent id of its ambiguous create
        self._last_beat = -1e9
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("reconciler already started")
        self._task = asyncio.create_task(self._loop(), name="create-reconciler")

    def poke(self) -> None:
        """Reconcile soon (after a restart found a lost create, or an ambiguous one)."""
        self._wake.set()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # our creates still in flight are orphans now: let the next instance take them at once
        with contextlib.suppress(Exception):
            await self.journal.forget_instance(self.instance)

    # --- the journal around one create -----------------------------------------------------
    @contextlib.asynccontextmanager
    async def journal_create(self, rec: SessionRecord) -> AsyncIterator[None]:
        """Wrap the upstream create and the storing of its id. The entry is crossed out when the
        block completes or the upstream refused for certain; an ambiguous end leaves it open (for
        ``after_ambiguous`` and the sweep); anything else leaves it in flight (our instance's
        death, or ``HORIZON``, opens it)."""
        await self._beat(force=False)
        intent = CreateIntent(id=uuid.uuid4().hex, sessionId=rec.id, avatar=dict(rec.avatar),
                              maxDuration=rec.maxDuration, at=time.time(), instance=self.instance)
        await self.journal.record(intent)
        try:
            yield
        except UpstreamAmbiguous:
            intent.state, intent.reason = OPEN, "ambiguous answer"
            await self.journal.update(intent)
            self._ambiguous[rec.id] = intent.id
            self.poke()
            raise
        except AvatarServerError:
            await self.journal.clear(intent.id)  # refused for certain: nothing was created
            raise
        else:
            await self.journal.clear(intent.id)

    async def after_ambiguous(self, rec: SessionRecord) -> str | None:
        """Reconcile now the create of ``rec`` that ended ambiguously. Returns the upstream id if it
        was adopted (already stored in the session), else None (the session should end; whatever
        matched was cancelled, or the sweep will see to it)."""
        intent_id = self._ambiguous.pop(rec.id, None)
        if intent_id is None:
            return None
        try:
            adopted = await self._locked_pass(adopt_for=intent_id, wait=LOCK_WAIT)
        except Exception as exc:  # the sweep retries; the session ends as before
            log.warning("create reconciliation after an ambiguous create failed (%s); the sweep will retry",
                        _describe(exc), extra={"session_id": rec.id})
            self.poke()
            return None
        return adopted.get(intent_id)

    # --- the background sweep --------------------------------------------------------------
    async def _loop(self) -> None:
        next_pass = 0.0
        while not self._closed:
            try:
                await self._beat(force=False)
                if self._wake.is_set() or time.monotonic() >= next_pass:
                    self._wake.clear()
                    next_pass = time.monotonic() + self.interval
                    await self._locked_pass(adopt_for=None, wait=0.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("create reconciliation failed (%s); retrying", _describe(exc))
            wait = max(0.05, min(self.beat_every, next_pass - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def reconcile_once(self) -> dict[str, str]:
        """One pass now (tests, tools); returns {intent id: adopted upstream id} (never adopts here)."""
        return await self._locked_pass(adopt_for=None, wait=LOCK_WAIT)

    async def _beat(self, *, force: bool) -> None:
        if force or time.monotonic() - self._last_beat >= self.beat_every:
            await self.journal.beat(self.instance, self.alive_ttl)
            self._last_beat = time.monotonic()

    async def _locked_pass(self, *, adopt_for: str | None, wait: float) -> dict[str, str]:
        owner = f"{self.instance}:{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + wait
        while not await self.journal.try_lock(owner, PASS_TIMEOUT + 5):
            if time.monotonic() >= deadline:
                return {}
            await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(PASS_TIMEOUT):
                return await self._pass(adopt_for)
        finally:
            await self.journal.release_lock(owner)

    # --- one pass --------------------------------------------------------------------------
    async def _pass(self, adopt_for: str | None) -> dict[str, str]:
        intents = await self.journal.all()
        known = {i.id for i in intents}
        for sid, iid in list(self._ambiguous.items()):
            if iid not in known:
                self._ambiguous.pop(sid, None)
        if not intents:
            return {}
        now = time.time()
        alive = await self.journal.alive(i.instance for i in intents if i.state == IN_FLIGHT)
        live: list[CreateIntent] = []
        due: list[CreateIntent] = []
        for intent in intents:
            if intent.state == IN_FLIGHT:
                if intent.instance in alive and now - intent.at < self.horizon:
                    live.append(intent)
                    continue
                intent.state = OPEN
                intent.reason = "instance gone" if intent.instance not in alive else "in flight too long"
                await self.journal.update(intent)
            due.append(intent)
        if not due:
            return {}

        conversations = await self._list_since(min(i.at for i in due) - self.skew,
                                               max(i.at for i in due) + self.horizon + 1)
        owned = await self._owned()
        candidates = [c for c in conversations
                      if c.get("status") == "in_progress" and isinstance(c.get("id"), str) and c["id"] not in owned]
        found = {i.id: [c["id"] for c in candidates if self._matches(i, c)] for i in due}
        held = {c["id"] for c in candidates if any(self._matches(i, c) for i in live)}
        claimants: dict[str, list[str]] = {}
        for intent_id, ids in found.items():
            for cid in ids:
                claimants.setdefault(cid, []).append(intent_id)

        adopted: dict[str, str] = {}
        if adopt_for is not None and adopt_for in found:
            ids = found[adopt_for]
            if len(ids) == 1 and ids[0] not in held and claimants[ids[0]] == [adopt_for]:
                intent = next(i for i in due if i.id == adopt_for)
                if await self._adopt(intent, ids[0]):
                    adopted[adopt_for] = ids[0]

        to_cancel = sorted({cid for ids in found.values() for cid in ids
                            if cid not in held and cid not in adopted.values()})
        cancelled: set[str] = set()
        limit = asyncio.Semaphore(CANCELS_AT_ONCE)

        async def cancel(cid: str) -> None:
            async with limit:
                try:
                    await self.upstream.cancel_session(cid)
                except AvatarServerError as exc:
                    log.warning("could not cancel unowned upstream session %s (%s); the next pass retries",
                                cid, exc.code, extra={"upstream_id": cid})
                    return
                cancelled.add(cid)

        await asyncio.gather(*(cancel(cid) for cid in to_cancel))

        for intent in due:
            await self._decide(intent, found[intent.id], held, cancelled, claimants, adopted, now)
        return adopted

    async def _decide(
        self,
        intent: CreateIntent,
        ids: list[str],
        held: set[str],
        cancelled: set[str],
        claimants: dict[str, list[str]],
        adopted: dict[str, str],
        now: float,
    ) -> None:
        window = f"{iso(intent.at - self.skew)}..{iso(intent.at + self.horizon)}"
        extra = {"session_id": intent.sessionId, "avatar": _avatar_text(intent.avatar)}
        if intent.id in adopted:
            upstream_id = adopted[intent.id]
            log.info("create reconciled: adopted upstream session %s for session %s: the only unowned match of "
                     "its lost create (%s; same avatar, created in %s)", upstream_id, intent.sessionId,
                     intent.reason, window, extra={**extra, "upstream_id": upstream_id})
            await self.journal.clear(intent.id)
            return
        mine = [cid for cid in ids if cid in cancelled]
        pending = [cid for cid in ids if cid not in cancelled]  # held by a live create, or the cancel failed
        if mine:
            sharing = len({c for cid in mine for c in claimants[cid]})
            log.warning("create reconciled: cancelled %d unowned upstream session(s) for session %s: they match "
                        "its lost create (%s; same avatar, created in %s; %d lost create(s) matched them): %s",
                        len(mine), intent.sessionId, intent.reason, window, sharing, _ids(mine), extra=extra)
            intent.cancelled = [*intent.cancelled, *mine]
            intent.decided = True
        elif not intent.decided and not pending:
            log.info("create reconciled: nothing found upstream for session %s: no unowned match of its lost "
                     "create (%s; same avatar, created in %s)", intent.sessionId, intent.reason, window, extra=extra)
            intent.decided = True
        if now > intent.at + self.horizon and not pending:
            log.debug("create journal entry closed", extra=extra)
            await self.journal.clear(intent.id)
        else:
            await self.journal.update(intent)

    def _matches(self, intent: CreateIntent, conversation: dict[str, Any]) -> bool:
        return matches(intent, conversation, skew=self.skew, horizon=self.horizon)

    async def _list_since(self, start: float, end: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await self.upstream.list_conversations(start, end, limit=PAGE, cursor=cursor)
            out.extend(c for c in page["data"] if isinstance(c, dict))
            cursor = page.get("nextCursor")
            if not page.get("hasMore") or not cursor:
                return out
        log.warning("create reconciliation: more than %d conversations since %s; checking the newest only",
                    PAGE * MAX_PAGES, iso(start))
        return out

    async def _owned(self) -> set[str]:
        records = await self.store.get_many(await self.store.active_ids())
        return {r.upstreamId for r in records if r.upstreamId}

    async def _adopt(self, intent: CreateIntent, upstream_id: str) -> bool:
        rec = await self.store.get(intent.sessionId)
        if rec is None or rec.status is not SessionStatus.PROVISIONING or rec.upstreamId is not None:
            return False
        return await self.store.set_fields(rec.id, {"upstreamId": upstream_id})


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return str(code) if isinstance(code, str) else type(exc).__name__
