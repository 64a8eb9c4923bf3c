"""The create journal's rules: what matches a lost create, and what the journal keeps of a create
that succeeded, was refused, ended ambiguously or was cut short (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from avatar_server.errors import UpstreamAmbiguous, UpstreamStatusError
from avatar_server.models.sessions import SessionRecord, SessionStatus, iso
from avatar_server.sessions.reconcile import CreateReconciler, matches, same_avatar
from avatar_server.store.connection import client_from_url
from avatar_server.store.journal import IN_FLIGHT, OPEN, CreateIntent, CreateJournal

CUSTOM = "5f0c6f0e-3a57-4d1e-9a8e-1c2b3d4e5f60"
PRESET = {"type": "runway-preset", "presetId": "cat-character"}


def intent(at: float = 1000.0, avatar: dict[str, Any] | None = None) -> CreateIntent:
    return CreateIntent(id="i", sessionId="s", avatar=avatar or PRESET, maxDuration=60, at=at, instance="x")


def conversation(created: float, avatar: Any = None) -> dict[str, Any]:
    return {"id": "c", "status": "in_progress", "createdAt": iso(created),
            "avatar": {**PRESET, "name": "Cat Character"} if avatar is None else avatar}


@pytest.mark.parametrize("theirs,same", [
    ({"type": "runway-preset", "presetId": "cat-character", "name": "Cat"}, True),
    ({"type": "runway-preset", "presetId": "influencer", "name": "Influencer"}, False),
    ({"type": "custom", "id": CUSTOM, "name": None}, False),
    (None, False),  # the upstream does not know the avatar any more: never a match
])
def test_preset_avatars(theirs: Any, same: bool) -> None:
    assert same_avatar(PRESET, theirs) is same


@pytest.mark.parametrize("theirs,same", [
    ({"type": "custom", "id": CUSTOM.upper(), "name": "Ada"}, True),  # uuids compare case-blind
    ({"type": "custom", "id": None, "name": None}, False),  # a deleted custom avatar
    ({"type": "custom", "id": "00000000-0000-4000-8000-000000000000", "name": "Bo"}, False),
    ({"type": "runway-preset", "presetId": CUSTOM, "name": "x"}, False),
])
def test_custom_avatars(theirs: Any, same: bool) -> None:
    assert same_avatar({"type": "custom", "avatarId": CUSTOM}, theirs) is same


@pytest.mark.parametrize("offset,inside", [(-5.0, True), (-5.5, False), (0.0, True), (60.0, True), (60.5, False)])
def test_the_time_window_is_skew_before_to_horizon_after(offset: float, inside: bool) -> None:
    assert matches(intent(), conversation(1000.0 + offset), skew=5.0, horizon=60.0) is inside


def test_an_unreadable_creation_time_never_matches() -> None:
    assert not matches(intent(), {**conversation(1000.0), "createdAt": "yesterday"}, skew=5, horizon=60)
    assert not matches(intent(), {**conversation(1000.0), "createdAt": None}, skew=5, horizon=60)


# -- the journal around one create (real Redis) -----------------------------------------------


@pytest.fixture
async def reconciler(redis_url: str) -> AsyncIterator[CreateReconciler]:
    client = client_from_url(redis_url)
    store: Any = SimpleNamespace(r=client)
    r = CreateReconciler(store=store, upstream=None, instance_id="inst-1", lease_seconds=2.0)  # type: ignore[arg-type]
    try:
        yield r
    finally:
        await r.close()
        await client.aclose()


def record() -> SessionRecord:
    return SessionRecord(id="sess-1", status=SessionStatus.PROVISIONING, avatar=PRESET, maxDuration=60,
                         createdAt=1000.0)


async def entries(r: CreateReconciler) -> list[CreateIntent]:
    return await r.journal.all()


async def test_journalled_before_and_crossed_out_after(reconciler: CreateReconciler) -> None:
    async with reconciler.journal_create(record()):
        (entry,) = await entries(reconciler)
        assert (entry.sessionId, entry.state, entry.avatar, entry.instance) == ("sess-1", IN_FLIGHT, PRESET, "inst-1")
        assert await reconciler.journal.alive(["inst-1", "other"]) == {"inst-1"}
    assert await entries(reconciler) == []


async def test_a_certain_refusal_is_crossed_out(reconciler: CreateReconciler) -> None:
    with pytest.raises(UpstreamStatusError):
        async with reconciler.journal_create(record()):
            raise UpstreamStatusError("refused", upstream_status=400, code="upstream_rejected")
    assert await entries(reconciler) == []


async def test_an_ambiguous_end_is_left_open_for_reconciliation(reconciler: CreateReconciler) -> None:
    with pytest.raises(UpstreamAmbiguous):
        async with reconciler.journal_create(record()):
            raise UpstreamAmbiguous("timed out")
    (entry,) = await entries(reconciler)
    assert entry.state == OPEN and entry.reason == "ambiguous answer"


async def test_a_create_cut_short_stays_in_flight(reconciler: CreateReconciler) -> None:
    with pytest.raises(asyncio.CancelledError):
        async with reconciler.journal_create(record()):
            raise asyncio.CancelledError
    (entry,) = await entries(reconciler)
    assert entry.state == IN_FLIGHT  # the instance's death (or the horizon) opens it
    await reconciler.close()  # a closing instance gives its in-flight creates up at once
    assert await reconciler.journal.alive(["inst-1"]) == set()


async def test_an_entry_crossed_out_is_not_written_back(redis_url: str) -> None:
    client = client_from_url(redis_url)
    try:
        journal = CreateJournal(client)
        entry = intent()
        await journal.record(entry)
        await journal.clear(entry.id)
        entry.decided = True
        assert await journal.update(entry) is False
        assert await journal.all() == []
    finally:
        await client.aclose()
