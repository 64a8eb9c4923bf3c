"""Fixtures of the avatar/knowledge API tests."""

from __future__ import annotations

import pytest

from ..harness import ServerHarness
from .kb_helpers import Upstream, upstream_of


@pytest.fixture(params=["engine_mode", "runway_mode"])
def each_mode(request: pytest.FixtureRequest, redis_url: str) -> tuple[ServerHarness, Upstream]:
    """The server and what its upstream holds, once per mode: engine mode (the embedded engine)
    and Runway mode (against the separately started engine). Asking for ``redis_url`` here puts it
    in the test's fixture closure, so the test Redis is flushed before each test like any other."""
    if request.param == "engine_mode":
        server = request.getfixturevalue("server")
        return server, upstream_of(server)
    server = request.getfixturevalue("runway_server")
    return server, upstream_of(server, request.getfixturevalue("engine"))
