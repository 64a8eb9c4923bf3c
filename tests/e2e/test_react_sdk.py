"""Runway's own React SDK (`@runwayml/avatars-react`, from npm, bundled with esbuild:
tests/e2e/react_sdk) on a customer's page of its own origin, in headless Chromium, switched to
avatar_server by one URL: ``<AvatarCall avatarId="cooking-teacher"
connectUrl="{server}/v1/sessions/connect?key=pk_…">`` (issue 15).

- Runway mode, an allowed origin: the SDK's request (``{avatarId}``, only ``Content-Type:
  application/json``, so a CORS preflight first) gets 200 with consumed LiveKit credentials, and the
  SDK goes on to join the room it was given: its LiveKit client calls ``serverUrl`` with exactly
  that ``token``. No LiveKit server runs here — a stand-in on ``serverUrl`` records the call and
  answers 503 — so the join fails as a connection error, which is what the SDK reports (not a 4xx
  from avatar_server).
- An origin the site does not allow: the preflight is refused, no credentials, nothing started.
- The local engine: a clear 409 ``transport_unsupported`` the SDK reports ("use the <avatar-widget>").
- The key never appears in the server's log (the autouse leak guard checks every record too).

Also the widget's own Runway transport (``web/vendor``, ``@runwayml/avatars``): it joins with the SDK's
private ``AvatarSession._connect`` (the SDK has no public entry point taking consumed credentials), so
the pinned version is checked here: the built bundle must reach LiveKit with the token it was given.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from aiohttp import web

from avatar_server.store.embedded import free_port
from tests.e2e.browser_helpers import EmbedPage, chromium
from tests.e2e.npm_helpers import REACT_SDK, REACT_SDK_BUNDLE, VENDOR, VENDOR_BUNDLE, ensure_bundle
from tests.harness import (
    ServerHarness,
    runway_mode,
)

pytestmark = pytest.mark.timeout(180)

AVATAR = "cooking-teacher"


@dataclass
class FakeLiveKit:
    """Where ``serverUrl`` points: records every request (path, query) and answers 503, as a
    LiveKit server that is not there would fail the join."""

    port: int = field(default_factory=free_port)
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path,
                          "query": {k: v[0] for k, v in parse_qs(request.query_string).items()}})
        return web.Response(status=503, text="no LiveKit server runs here")

    async def __aenter__(self) -> FakeLiveKit:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)  # its URLs carry the media token
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def tokens(self) -> set[str]:
        return {r["query"].get("access_token", "") for r in self.seen} - {""}


@pytest.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    async with FakeLiveKit() as fake:
        yield fake


@pytest.fixture
async def runway_sdk_server(redis_url: str, data_dir: Path, livekit: FakeLiveKit) -> AsyncIterator[ServerHarness]:
    """avatar_server in Runway mode against an engine whose consume answers a LiveKit-style
    ``ws://`` URL (the stand-in above), as Runway's answers ``wss://…livekit.cloud``."""
    async with runway_mode(data_dir, redis_url, public_url=livekit.ws_base) as (h, _):
        yield h

def sdk_page_html(connect_url: str) -> str:
    config = json.dumps({"avatarId": AVATAR, "connectUrl": connect_url})
    return ("<!doctype html><html><head><meta charset='utf-8'><title>shop on Runway's React SDK</title>"
            f"<script>window.AVATAR_TEST = {config};</script>"
            "<script type='module' src='/app.js'></script></head>"
            "<body><h1>A customer's shop</h1><div id='root'></div></body></html>")


class SdkPage(EmbedPage):
    """A customer's page of its own origin: ``/`` renders ``<AvatarCall>`` from ``/app.js``."""

    def __init__(self) -> None:
        super().__init__("")
        bundle = ensure_bundle(REACT_SDK, REACT_SDK_BUNDLE)
        self.runner.app.router.add_get(
            "/app.js", lambda _r: web.FileResponse(bundle, headers={"Content-Type": "text/javascript"}))


async def _site(server: ServerHarness, origin: str) -> str:
    status, site = await server.admin("POST", "/v1/sites", {
        "name": "shop", "allowedOrigins": [origin], "avatarIds": [AVATAR], "maxConcurrentSessions": 2})
    assert status == 201, site
    return site["publishableKey"]


def _connect_url(server: ServerHarness, key: str) -> str:
    return f"{server.base}/v1/sessions/connect?key={quote(key)}"


async def _sdk_errors(page: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    await page.wait_for_function("() => window.__sdk && window.__sdk.errors.length > 0", timeout=timeout * 1000)
    return await page.evaluate("window.__sdk.errors")


def _assert_not_logged(caplog: pytest.LogCaptureFixture, key: str) -> None:
    assert caplog.records, "no log records captured"
    for r in caplog.records:
        text = r.getMessage() + " ".join(str(v) for v in vars(r).values() if isinstance(v, str))
        assert key not in text, f"the publishable key reached a log line of {r.name}"


async def test_react_sdk_gets_credentials_and_joins_the_room_it_was_given(
        runway_sdk_server: ServerHarness, livekit: FakeLiveKit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = runway_sdk_server
    async with SdkPage() as site:
        key = await _site(server, site.origin)
        site.html = sdk_page_html(_connect_url(server, key))
        async with chromium() as ctx:
            page = await ctx.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            async with page.expect_response(
                    lambda r: "/v1/sessions/connect" in r.url and r.request.method == "POST", timeout=30_000) as info:
                await page.goto(site.origin + "/")
            resp = await info.value
            request = resp.request
            assert request.headers.get("content-type") == "application/json", request.headers
            assert "authorization" not in {k.lower() for k in request.headers}  # the SDK cannot set one
            assert json.loads(request.post_data or "{}") == {"avatarId": AVATAR}
            assert resp.status == 200, await resp.text()
            creds = await resp.json()
            assert resp.headers.get("access-control-allow-origin") == site.origin
            # consumed credentials in the shape the SDK joins with, never {sessionId, sessionKey}
            assert creds["transport"] == "livekit" and "sessionKey" not in creds, creds
            assert creds["serverUrl"].startswith(livekit.ws_base) and creds["token"] and creds["roomName"], creds

            # the SDK goes on to join that room, with that token; the join fails (no LiveKit here)
            errors = await _sdk_errors(page)
            assert creds["token"] in livekit.tokens(), livekit.seen
            assert all(r["path"].startswith(creds["serverUrl"].removeprefix(livekit.ws_base)) for r in livekit.seen)
            assert not any(e["message"].startswith("Failed to connect: 4") for e in errors), errors
            assert any("ConnectionError" in (e["name"] or "") or "connection" in e["message"].lower()
                       for e in errors), errors
            assert not page_errors, page_errors
    status, rec = await server.admin("GET", f"/v1/sessions/{creds['sessionId']}")
    assert status == 200 and rec["status"] == "RUNNING", rec  # the credentials were handed out
    await server.admin("DELETE", f"/v1/sessions/{creds['sessionId']}")
    _assert_not_logged(caplog, key)


async def test_react_sdk_from_an_origin_the_site_does_not_allow_gets_nothing(
        runway_sdk_server: ServerHarness, livekit: FakeLiveKit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = runway_sdk_server
    async with SdkPage() as site:
        key = await _site(server, "https://shop.example.com")  # not this page's origin
        site.html = sdk_page_html(_connect_url(server, key))
        async with chromium() as ctx:
            page = await ctx.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url) if "/v1/sessions/connect" in r.url else None)
            answered: list[int] = []
            page.on("response", lambda r: answered.append(r.status) if "/v1/sessions/connect" in r.url else None)
            await page.goto(site.origin + "/")
            errors = await _sdk_errors(page)
            # the preflight is refused: the browser never sends the POST, the SDK sees a failed fetch
            assert failed and not answered, (failed, answered)
            assert any("fetch" in e["message"].lower() for e in errors), errors
    assert livekit.seen == []
    for which in ("active", "ended"):
        status, sessions = await server.admin("GET", f"/v1/sessions?status={which}")
        assert sessions["data"] == [], sessions  # nothing was started
    _assert_not_logged(caplog, key)


async def test_react_sdk_against_the_local_engine_is_told_to_use_the_widget(
        server: ServerHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with SdkPage() as site:
        key = await _site(server, site.origin)
        site.html = sdk_page_html(_connect_url(server, key))
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.goto(site.origin + "/")
            errors = await _sdk_errors(page)
    [error] = errors
    assert error["message"].startswith("Failed to connect: 409"), error
    assert "transport_unsupported" in error["message"] and "<avatar-widget>" in error["message"], error
    status, sessions = await server.admin("GET", "/v1/sessions?status=active")
    assert sessions["data"] == [], sessions
    _assert_not_logged(caplog, key)


# --- the widget's Runway transport (web/vendor) and the SDK's private entry point ----------------

def test_vendor_sdk_is_pinned_exactly() -> None:
    """The adapter calls ``AvatarSession._connect`` (private): the SDK must not move under it."""
    package = json.loads((VENDOR / "package.json").read_text())
    lock = json.loads((VENDOR / "package-lock.json").read_text())
    pinned = package["dependencies"]["@runwayml/avatars"]
    assert pinned[0].isdigit(), f"@runwayml/avatars must be pinned to one version, not {pinned!r}"
    assert lock["packages"]["node_modules/@runwayml/avatars"]["version"] == pinned


VENDOR_CONNECT = """
async ([server, serverUrl]) => {
  const { connect } = await import(`${server}/vendor/runway-avatars.js`);
  const video = document.createElement("video");
  document.body.append(video);
  try {
    await connect({ serverUrl, token: "media-token-of-the-test", roomName: "room-1", video, microphone: false,
                    onEnd: () => {}, onTranscript: () => {} });
    return { joined: true };
  } catch (err) {
    return { joined: false, name: err.name, code: err.code, message: String(err.message) };
  }
}
"""


async def test_widget_runway_transport_reaches_livekit_through_the_pinned_sdk(
        server: ServerHarness, livekit: FakeLiveKit) -> None:
    """If an upgrade renames or reshapes ``_connect``, this fails: the adapter then throws before
    any LiveKit call (``TypeError``, or its own guard) instead of a connection error after one."""
    ensure_bundle(VENDOR, VENDOR_BUNDLE)
    status, body, headers = await server.call("GET", "/vendor/runway-avatars.js")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    async with EmbedPage("<!doctype html><html><body>shop</body></html>") as site:
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.goto(site.origin + "/")
            outcome = await asyncio.wait_for(page.evaluate(VENDOR_CONNECT, [server.base, livekit.ws_base]), 60)
    assert outcome["joined"] is False, outcome  # no LiveKit server runs here
    assert outcome["code"] == "CONNECTION_FAILED", outcome  # the SDK's own AvatarError, after trying
    assert "media-token-of-the-test" in livekit.tokens(), livekit.seen
