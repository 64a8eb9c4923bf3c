"""Helpers of the avatar/knowledge tests: real images, documents of an exact token count, and
reading what the upstream (the engine, embedded or standalone) holds."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import zlib
from typing import Any

from avatar_server.catalog.tokens import count_tokens

from ..catalog_helpers import VERSION
from ..harness import EngineHarness, ServerHarness

_PROSE = "The quick brown fox jumps over the lazy dog. " * 4500


def png_bytes(width: int = 16, height: int = 16, *, rgb: tuple[int, int, int] = (200, 120, 40),
              raw_rows: bytes | None = None) -> bytes:
    """A well-formed PNG (8-bit RGB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = raw_rows if raw_rows is not None else b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def png_data_uri(**kw: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(**kw)).decode()


def avatar_body(name: str = "Ada", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "referenceImage": png_data_uri(),
        "personality": "You are a helpful support agent.",
        "voice": {"type": "runway-live-preset", "presetId": "adrian"},
    }
    body.update(kw)
    return body


def content_with_tokens(target: int) -> str:
    """English prose (up to half the tokens) then `` a`` words (one token each) so that the server
    counts exactly ``target`` tokens, in at most 200,000 characters up to ~65,000 tokens."""
    lo, hi = 0, len(_PROSE)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(_PROSE[:mid]) <= target // 2:
            lo = mid
        else:
            hi = mid - 1
    base = _PROSE[:lo].rstrip()
    pad = target - count_tokens(base)
    for n in range(max(0, pad - 3), pad + 4):
        text = base + " a" * n
        if count_tokens(text) == target:
            return text
    raise AssertionError(f"no content of exactly {target} tokens")


async def make_document(server: ServerHarness, name: str = "FAQ", content: str = "# FAQ\n\nWe ship worldwide.",
                        ) -> dict[str, Any]:
    status, doc = await server.admin("POST", "/v1/documents", {"name": name, "content": content})
    assert status == 201, doc
    return doc


async def make_avatar(server: ServerHarness, **kw: Any) -> dict[str, Any]:
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(**kw))
    assert status == 201, avatar
    return avatar


async def wait_status(server: ServerHarness, avatar_id: str, wanted: str = "READY", timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, avatar = await server.admin("GET", f"/v1/avatars/{avatar_id}")
        assert status == 200, avatar
        if avatar["status"] == wanted or time.monotonic() > deadline:
            assert avatar["status"] == wanted, avatar
            return avatar
        await asyncio.sleep(0.1)


class Upstream:
    """Reads the upstream's own records (engine mode: the embedded engine; Runway mode: the engine)."""

    def __init__(self, server: ServerHarness, engine: EngineHarness | None = None) -> None:
        self.server = server
        self.engine = engine

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.engine is not None:
            status, data, _ = await self.engine.call(method, path, token=self.engine.key, json_body=body,
                                                     headers=VERSION)
        else:
            status, data, _ = await self.server.call(method, "/engine" + path,
                                                     token=self.server.settings.admin_token,
                                                     json_body=body, headers=VERSION)
        return status, data

    async def avatar(self, avatar_id: str) -> dict[str, Any] | None:
        status, data = await self.call("GET", f"/v1/avatars/{avatar_id}")
        assert status in (200, 404), (status, data)
        return data if status == 200 else None

    async def document(self, document_id: str) -> dict[str, Any] | None:
        status, data = await self.call("GET", f"/v1/documents/{document_id}")
        assert status in (200, 404), (status, data)
        return data if status == 200 else None

    async def all_avatars(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            status, page = await self.call("GET", "/v1/avatars?limit=100" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, page
            out += page["data"]
            cursor = page.get("nextCursor")
            if not page.get("hasMore"):
                return out

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        if self.engine is not None:
            return await self.engine.control(method, path, body)
        return await self.server.control(method, path, body)


def upstream_of(server: ServerHarness, engine: EngineHarness | None = None) -> Upstream:
    return Upstream(server, engine)
