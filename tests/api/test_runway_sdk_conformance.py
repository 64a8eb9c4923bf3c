"""Conformance: Runway's official Python SDK (``runwayml``) against the local engine.

The SDK builds every request itself (paths, ``X-Runway-Version``, camelCase bodies) and parses
every answer into its own models (status-discriminated unions). Each step checks that what the
SDK parsed is what was sent — and that it parsed into the variant Runway's schema names, with no
field the SDK does not know (``model_extra`` empty).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from runwayml import AsyncRunwayML, BadRequestError, NotFoundError
from runwayml.types import avatar_retrieve_response as avatar_types
from runwayml.types import avatar_update_response
from runwayml.types import realtime_session_retrieve_response as session_types

from tests.catalog_helpers import png_uri
from tests.harness import EngineHarness

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def client(engine: EngineHarness) -> Any:
    sdk = AsyncRunwayML(api_key=engine.key, base_url=engine.base, max_retries=0, timeout=20)
    yield sdk
    await sdk.close()


def no_extras(model: Any) -> None:
    """Every key in the answer is a field the SDK's model declares (recursively)."""
    fields = type(model).model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    # (the SDK's lenient construct also keeps the wire names of declared fields among the extras)
    unknown = set(model.model_extra or {}) - known
    assert not unknown, f"{type(model).__name__} got unknown fields {unknown}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "model_extra"):
                no_extras(item)


async def until(fetch: Any, predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_documents_round_trip_through_the_sdk(client: AsyncRunwayML) -> None:
    content = "# Opening hours\n\nThe museum opens at 9am, Tuesday to Sunday. Écoles: 8h30."
    created = await client.documents.create(name="hours.md", content=content)
    no_extras(created)
    assert (created.name, created.content, created.type, created.used_by) == ("hours.md", content, "text", [])
    assert uuid.UUID(created.id).version == 4
    assert isinstance(created.created_at, datetime) and created.created_at == created.updated_at

    got = await client.documents.retrieve(created.id)
    no_extras(got)
    assert got.model_dump() == created.model_dump()

    assert await client.documents.update(created.id, name="hours-v2.md", content="Opens at 10am.") is None
    got = await client.documents.retrieve(created.id)
    assert (got.name, got.content) == ("hours-v2.md", "Opens at 10am.")
    assert got.updated_at >= got.created_at == created.created_at

    others = [(await client.documents.create(name=f"doc{i}.txt", content=f"text {i}")).id for i in range(4)]
    listed: list[str] = []
    async for item in client.documents.list(limit=2, sort="createdAt", order="desc"):  # follows nextCursor
        no_extras(item)
        assert not hasattr(item, "content") or getattr(item, "content", None) is None
        listed.append(item.id)
    assert listed == [*others[::-1], created.id]  # newest first, each once
    first_page = await client.documents.list(limit=2, sort="updatedAt", order="asc")
    assert [d.id for d in first_page.data] == [created.id, others[0]]
    assert first_page.next_cursor

    await client.documents.delete(created.id)
    with pytest.raises(NotFoundError):
        await client.documents.retrieve(created.id)


async def test_avatars_round_trip_through_the_sdk(client: AsyncRunwayML) -> None:
    doc = await client.documents.create(name="faq.md", content="Tickets cost 12 euros.")
    image = png_uri((30, 60, 200))
    created = await client.avatars.create(
        name="Ada", personality="A calm museum guide.", reference_image=image,
        voice={"type": "runway-live-preset", "preset_id": "clara"}, start_script="Welcome!",
        document_ids=[doc.id], image_processing="optimize",
    )
    no_extras(created)
    assert type(created).__name__ == "Processing"  # the create answer's PROCESSING variant
    assert (created.name, created.personality, created.start_script) == ("Ada", "A calm museum guide.", "Welcome!")
    assert created.document_ids == [doc.id]
    assert created.voice.type == "runway-live-preset" and created.voice.preset_id == "clara"
    assert created.voice.name and created.voice.description

    ready = await until(lambda: client.avatars.retrieve(created.id), lambda a: a.status == "READY")
    no_extras(ready)
    assert isinstance(ready, avatar_types.Ready)
    assert ready.processed_image_uri and ready.processed_image_uri.startswith("data:image/")
    assert ready.created_at == created.created_at

    used = await client.documents.retrieve(doc.id)
    assert [(u.id, u.name) for u in used.used_by] == [(created.id, "Ada")]

    voice_id = str(uuid.uuid4())
    updated = await client.avatars.update(
        created.id, name="Bea", personality="Cheerful.", start_script=None,
        voice={"type": "custom", "id": voice_id}, document_ids=[],
    )
    no_extras(updated)
    assert isinstance(updated, avatar_update_response.Ready)
    assert (updated.name, updated.personality, updated.start_script) == ("Bea", "Cheerful.", None)
    assert updated.voice.type == "custom" and updated.voice.id == voice_id and updated.voice.deleted is False
    assert updated.document_ids == [] and updated.status == "READY"
    assert (await client.documents.retrieve(doc.id)).used_by == []

    second = await client.avatars.create(
        name="Cy", personality="Brief.", reference_image="https://images.example.invalid/cy.png",
        voice={"type": "runway-live-preset", "preset_id": "max"},
    )
    assert second.start_script is None and second.reference_image_uri == "https://images.example.invalid/cy.png"
    listed = [a.id async for a in client.avatars.list(limit=1)]
    assert listed == [second.id, created.id]

    with pytest.raises(BadRequestError) as refused:
        await client.avatars.create(name="x" * 51, personality="p", reference_image=image,
                                    voice={"type": "runway-live-preset", "preset_id": "clara"})
    assert refused.value.status_code == 400 and refused.value.body["issues"][0]["path"] == ["name"]

    await client.avatars.delete(second.id)
    await client.avatars.delete(created.id)
    with pytest.raises(NotFoundError):
        await client.avatars.retrieve(created.id)


async def test_realtime_sessions_through_the_sdk(client: AsyncRunwayML) -> None:
    created = await client.realtime_sessions.create(
        model="gwm1_avatars", avatar={"type": "runway-preset", "preset_id": "cooking-teacher"},
        max_duration=120, personality="A patient chef.", start_script="Let's cook!",
        tools=[{"type": "client_event", "name": "show_recipe", "description": "Show a recipe card",
                "parameters": [{"type": "string", "name": "dish", "description": "The dish"}]}],
    )
    no_extras(created)
    first = await client.realtime_sessions.retrieve(created.id)
    no_extras(first)
    assert first.id == created.id and first.status in ("NOT_READY", "READY")
    ready = await until(lambda: client.realtime_sessions.retrieve(created.id), lambda s: s.status == "READY")
    assert isinstance(ready, session_types.Ready)
    no_extras(ready)
    assert ready.session_key and ready.expires_at > ready.created_at
    await client.realtime_sessions.delete(created.id)
    cancelled = await client.realtime_sessions.retrieve(created.id)
    assert isinstance(cancelled, session_types.Cancelled)

    avatar = await client.avatars.create(
        name="Dee", personality="Helpful.", reference_image=png_uri(),
        voice={"type": "runway-live-preset", "preset_id": "nina"},
    )
    with pytest.raises(BadRequestError):  # not READY yet
        await client.realtime_sessions.create(model="gwm1_avatars", avatar={"type": "custom", "avatar_id": avatar.id})
    await until(lambda: client.avatars.retrieve(avatar.id), lambda a: a.status == "READY")
    custom = await client.realtime_sessions.create(
        model="gwm1_avatars", avatar={"type": "custom", "avatar_id": avatar.id})
    got = await until(lambda: client.realtime_sessions.retrieve(custom.id), lambda s: s.status == "READY")
    assert isinstance(got, session_types.Ready) and got.id == custom.id
    await client.realtime_sessions.delete(custom.id)
    assert (await client.realtime_sessions.retrieve(custom.id)).status == "CANCELLED"
    with pytest.raises(BadRequestError):
        await client.realtime_sessions.create(
            model="gwm1_avatars", avatar={"type": "custom", "avatar_id": str(uuid.uuid4())})
