"""Unsafe and malformed reference images are refused before any upstream call, each with a 4xx
naming ``referenceImage`` — and the server never fetches a URL it is given."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from avatar_server.appkeys import CATALOG
from avatar_server.store.embedded import free_port

from ..harness import ServerHarness
from .kb_helpers import avatar_body, png_bytes, upstream_of

GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00" \
      b"\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def data_uri(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


class Canary:
    """A local HTTP server that counts every request: a URL pointing at it must never be fetched."""

    def __init__(self) -> None:
        self.hits = 0
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=png_bytes(), content_type="image/png")


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    c = Canary()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", c.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", c.port).start()
    yield c
    await runner.cleanup()


def fake_dns(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str) -> list[str]:
        return table.get(host, [])

    return resolve


CASES = [
    ("http", "http://{canary}/face.png", "invalid_image_url"),
    ("ipv4 literal", "https://{canary}/face.png", "image_url_not_allowed"),
    ("ipv4 integer", "https://2130706433:{port}/face.png", "image_url_not_allowed"),
    ("ipv6 literal", "https://[::1]:{port}/face.png", "image_url_not_allowed"),
    ("ipv6 mapped", "https://[::ffff:127.0.0.1]:{port}/face.png", "image_url_not_allowed"),
    ("localhost", "https://localhost:{port}/face.png", "image_url_not_allowed"),
    ("resolves to 10.x", "https://assets.intranet-cdn.net:{port}/face.png", "image_url_not_allowed"),
    ("resolves to loopback", "https://sneaky.rebind-host.net:{port}/face.png", "image_url_not_allowed"),
    ("does not resolve", "https://nowhere.unknown-host.net/face.png", "image_host_unresolvable"),
    ("credentials", "https://user:pw@images.public-cdn.net/face.png", "image_url_not_allowed"),
    ("over-long", "https://images.public-cdn.net/" + "a" * 2_100 + ".png", "invalid_image_url"),
    ("gif", data_uri("gif", GIF), "unsupported_image_type"),
    ("gif declared png", data_uri("png", GIF), "unsupported_image_type"),
    ("png prefix on junk", data_uri("png", b"\x89PNG\r\n\x1a\n" + os.urandom(512)), "unsupported_image_type"),
    ("jpeg declared png", data_uri("png", b"\xff\xd8\xff\xe0" + os.urandom(64)), "unsupported_image_type"),
    ("png declared jpeg", data_uri("jpeg", png_bytes()), "image_type_mismatch"),
    ("not base64", "data:image/png;base64,@@@@not-base64@@@@", "invalid_data_uri"),
    ("svg", "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode(), "unsupported_image_type"),
    ("ftp", "ftp://images.public-cdn.net/face.png", "invalid_image_url"),
]

DNS = {
    "assets.intranet-cdn.net": ["10.20.30.40"],
    "sneaky.rebind-host.net": ["93.184.216.34", "127.0.0.1"],
    "images.public-cdn.net": ["93.184.216.34"],
}


@pytest.mark.parametrize(("value", "code"), [(v, c) for _, v, c in CASES], ids=[n for n, _, _ in CASES])
async def test_unsafe_images_are_refused(server: ServerHarness, canary: Canary, value: str, code: str) -> None:
    assert server.app is not None
    server.app[CATALOG].avatars.resolver = fake_dns(DNS)
    value = value.format(canary=f"127.0.0.1:{canary.port}", port=canary.port)
    status, body = await server.admin("POST", "/v1/avatars", avatar_body(referenceImage=value))
    assert status == 422, body
    assert body["error"]["field"] == "referenceImage" and body["error"]["code"] == code, body
    assert "referenceImage" in body["error"]["message"]
    assert len(body["error"]["message"]) < 500  # the input is never echoed back
    assert canary.hits == 0
    stats = await server.control("GET", "/stats")
    assert stats["requests"]["avatar_create"] == 0, stats


async def test_unsafe_image_refused_on_patch_too(server: ServerHarness, canary: Canary) -> None:
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body())
    assert status == 201
    status, body = await server.admin("PATCH", f"/v1/avatars/{avatar['id']}",
                                      {"referenceImage": f"https://127.0.0.1:{canary.port}/x.png"})
    assert status == 422 and body["error"]["field"] == "referenceImage"
    stats = await server.control("GET", "/stats")
    assert stats["requests"]["avatar_update"] == 0
    assert canary.hits == 0


async def test_seven_megabytes_is_too_large(server: ServerHarness) -> None:
    value = "data:image/png;base64," + "A" * (7 * 1024 * 1024)
    status, body = await server.admin("POST", "/v1/avatars", avatar_body(referenceImage=value))
    assert status == 413 and body["error"]["field"] == "referenceImage", body
    assert (await server.control("GET", "/stats"))["requests"]["avatar_create"] == 0


async def test_data_uri_just_over_five_megabytes_names_the_field(server: ServerHarness) -> None:
    value = "data:image/png;base64," + "A" * 5_242_880
    status, body = await server.admin("POST", "/v1/avatars", avatar_body(referenceImage=value))
    assert status == 422 and body["error"]["field"] == "referenceImage", body


async def test_large_real_png_is_accepted_end_to_end(server: ServerHarness) -> None:
    """A ~3.8 MB PNG (a 5 MB data URI) passes our checks, the body limits and the engine."""
    width, height = 1100, 1150
    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    png = png_bytes(width, height, raw_rows=rows)
    value = data_uri("png", png)
    assert 4_500_000 < len(value) <= 5_242_880
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(referenceImage=value))
    assert status == 201, avatar
    assert await upstream_of(server).avatar(avatar["id"]) is not None


async def test_public_https_url_is_passed_on_unfetched(server: ServerHarness, canary: Canary) -> None:
    assert server.app is not None
    server.app[CATALOG].avatars.resolver = fake_dns(DNS)
    url = "https://images.public-cdn.net/faces/ada.png"
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(referenceImage=url))
    assert status == 201, avatar
    held = await upstream_of(server).avatar(avatar["id"])
    assert held is not None
    assert canary.hits == 0


async def test_runway_uri_is_passed_on(server: ServerHarness) -> None:
    status, avatar = await server.admin("POST", "/v1/avatars", avatar_body(referenceImage="runway://upload/abc123"))
    assert status == 201, avatar
