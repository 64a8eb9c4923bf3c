"""The demo page's config (``GET /demo/config.json``): the demo site's avatars by name — a custom
avatar an admin added to the demo site shows the name the catalog has for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from avatar_server.appkeys import DEMO

from ..harness import ServerHarness, assert_no_leaks, fast_engine_config, make_settings
from .kb_helpers import make_avatar


@pytest.fixture
async def demo_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    h = await ServerHarness(make_settings(data_dir, redis_url, demo=True), fast_engine_config()).start()
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def test_demo_config_names_custom_avatars(demo_server: ServerHarness) -> None:
    server = demo_server
    avatar = await make_avatar(server, name="Ada")
    assert server.app is not None
    site_id = await server.app[DEMO].get()
    status, site = await server.admin("GET", f"/v1/sites/{site_id}")
    assert status == 200, site
    avatar_ids = [*site["avatarIds"], avatar["id"]]
    status, site = await server.admin("PATCH", f"/v1/sites/{site_id}", {"avatarIds": avatar_ids})
    assert status == 200, site

    status, config, _ = await server.call("GET", "/demo/config.json")
    assert status == 200, config
    assert [a["id"] for a in config["avatars"]] == avatar_ids
    names = {a["id"]: a["name"] for a in config["avatars"]}
    assert names[avatar["id"]] == "Ada"
    assert all(names[a] for a in avatar_ids)
