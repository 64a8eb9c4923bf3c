"""The browser side in real headless Chromium (Debian's package, Playwright for Python):
the demo page and the embed widget against a real server and its local engine, the cap as
the visitor sees it, a foreign origin refused, the server's waiting room (the place in line, a
wait that runs out, a full room), and the Runway (LiveKit) transport up to the SDK boundary
with a stand-in module. The demo test keeps its screenshot in the test's temp dir, or as
``demo.png`` in ``AVATAR_SERVER_SCREENSHOTS`` (``docs/`` to refresh the docs' picture): a test run
leaves the work tree as it found it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_helpers import (
    AUDIO_PROBE,
    RECORD_EVENTS,
    VIDEO_PROBE,
    EmbedPage,
    chromium,
    embed_html,
)
from tests.e2e.rtc_helpers import use_loopback_candidates
from tests.harness import (
    ServerHarness,
    assert_no_leaks,
    fast_engine_config,
    make_settings,
    runway_mode,
)

pytestmark = pytest.mark.timeout(120)

WIDGET = "avatar-widget"

ServerFactory = Callable[..., Awaitable[ServerHarness]]


@pytest.fixture
async def make_server(redis_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ServerFactory]:
    """Servers in engine mode with the demo on (as ``avatar-server`` runs by default)."""
    use_loopback_candidates(monkeypatch)
    started: list[ServerHarness] = []

    async def make(**kw: Any) -> ServerHarness:
        h = await ServerHarness(make_settings(data_dir, redis_url, demo=True, **kw), fast_engine_config()).start()
        started.append(h)
        return h

    try:
        yield make
        for h in started:
            if h.runner is not None:
                await assert_no_leaks(h, None, h.control)
    finally:
        for h in started:
            await h.stop_all()


async def demo_key(server: ServerHarness) -> str:
    status, config, _ = await server.call("GET", "/demo/config.json")
    assert status == 200, config
    return config["publishableKey"]


async def events(page: Any, type_: str) -> list[dict[str, Any]]:
    return [e for e in await page.evaluate("window.__events") if e["type"] == type_]


async def wait_ended(page: Any, timeout: float) -> dict[str, Any]:
    await page.wait_for_function(
        "() => window.__events.some((e) => e.type === 'avatar-ended')", timeout=timeout * 1000)
    ended = await events(page, "avatar-ended")
    assert len(ended) == 1, ended
    assert ended[0]["bubbles"] and ended[0]["composed"]
    return ended[0]["detail"]


async def widget_text(page: Any) -> str:
    return await page.evaluate(f"document.querySelector('{WIDGET}').shadowRoot.textContent")


async def test_demo_plays_talks_and_ends(make_server: ServerFactory, tmp_path: Path) -> None:
    screenshot = Path(os.environ.get("AVATAR_SERVER_SCREENSHOTS") or tmp_path) / "demo.png"
    server = await make_server()
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        await page.select_option("#avatar", "tennis-coach")
        assert await page.evaluate(f"document.querySelector('{WIDGET}').shadowRoot.mode") == "open"

        started = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
        session_id = started["sessionId"]
        statuses = [e["detail"]["status"] for e in await events(page, "avatar-status")]
        assert statuses[0] == "starting" and "connecting" in statuses and statuses[-1] == "playing", statuses

        # frames are painted, time advances, the picture is not blank; an audio track is live
        probe = await page.evaluate(VIDEO_PROBE, WIDGET)
        assert probe["frames"] == 20 and probe["lastTime"] > probe["firstTime"], probe
        assert (probe["width"], probe["height"]) == (512, 512), probe
        assert probe["lumaSd"] > 10 and probe["colors"] > 20, probe
        assert probe["audioTracks"] == 1 and probe["audioLive"] == 1 and not probe["paused"], probe
        status, rec = await server.admin("GET", f"/v1/sessions/{session_id}")
        assert status == 200 and rec["status"] == "RUNNING" and rec["avatar"]["presetId"] == "tennis-coach", rec

        # the preset greets the visitor with its opening line, shown as a caption
        await page.locator(f"{WIDGET} .caption.assistant", has_text="your tennis coach").wait_for(timeout=15_000)
        # the data channel: a typed message is echoed as the visitor's caption and answered aloud
        # from the preset's sample knowledge
        box = page.locator(f"{WIDGET} input[name=text]")
        await box.fill("How does scoring work in tennis?")
        await box.press("Enter")
        await page.locator(f"{WIDGET} .caption.user", has_text="How does scoring work").wait_for(timeout=15_000)
        await page.locator(f"{WIDGET} .caption.assistant", has_text="fifteen, thirty").wait_for(timeout=15_000)
        peak = await page.evaluate(AUDIO_PROBE, [WIDGET, 2500])
        assert peak > 0.01, f"the avatar's reply was not heard (peak {peak})"
        assert await page.locator(f"{WIDGET} .countdown").is_visible()
        await page.screenshot(path=str(screenshot))

        # mic off: the button says so and the track sent to the engine is disabled
        mic = page.locator(f"{WIDGET} .mic")
        await mic.click()
        assert await mic.get_attribute("aria-pressed") == "false"
        assert await page.evaluate(
            f"document.querySelector('{WIDGET}')._call.mic.getAudioTracks()[0].enabled") is False

        detail = await page.evaluate(f"document.querySelector('{WIDGET}').end()")
        assert detail["reason"] == "client" and detail["sessionId"] == session_id, detail
        ended = await wait_ended(page, 10)
        assert ended["reason"] == "client" and ended["sessionId"] == session_id
        assert "ended" in await widget_text(page)
        assert errors == []
    rec = await server.wait_for(session_id, lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client", rec
    assert screenshot.stat().st_size > 10_000


async def test_widget_is_ended_by_the_cap_and_says_so(make_server: ServerFactory) -> None:
    server = await make_server()  # the server's cap stays 300 s: 10 s comes from the attribute alone
    assert server.settings.cap_seconds == 300
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        await page.evaluate(f"() => document.querySelector('{WIDGET}').setAttribute('max-duration', '10')")
        started = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
        rec = await server.admin("GET", f"/v1/sessions/{started['sessionId']}")
        assert rec[1]["maxDuration"] == 10, rec
        # the server's 10-second warning is shown (for 6 s) beside the countdown
        await page.locator(f"{WIDGET} .warning", has_text="seconds left").wait_for(timeout=5_000)
        assert await page.locator(f"{WIDGET} .countdown").is_visible()
        ended = await wait_ended(page, 30)
        assert ended["reason"] == "cap", ended
        text = await widget_text(page)
        assert "time limit" in text, text
        assert await page.locator(f"{WIDGET} .start").is_visible()  # ready to talk again
    rec = await server.wait_for(started["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "cap", rec


async def test_foreign_origin_cannot_start(make_server: ServerFactory) -> None:
    server = await make_server()
    key = await demo_key(server)
    async with EmbedPage(embed_html(server.base, {"avatar": "cooking-teacher", "key": key})) as site:
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.add_init_script(RECORD_EVENTS)
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(f"{r.method} {r.url}"))
            await page.goto(site.origin + "/")
            await page.wait_for_function(f"() => customElements.get('{WIDGET}') !== undefined")
            outcome = await page.evaluate(f"""() => document.querySelector('{WIDGET}').start().then(
                () => ({{ok: true}}), (err) => ({{ok: false, reason: err.reason, message: err.message}}))""")
            assert outcome["ok"] is False and outcome["reason"] == "forbidden", outcome
            ended = await wait_ended(page, 5)
            assert ended["reason"] == "forbidden" and ended["sessionId"] is None
            assert "not allowed" in await widget_text(page)
    # the browser's request was refused (no CORS answer for that origin): the server says 403
    assert f"POST {server.base}/v1/sessions" in failed, failed
    status, _, headers = await server.call("OPTIONS", "/v1/sessions", headers={
        "Origin": site.origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, body, _ = await server.call("POST", "/v1/sessions", token=key, headers={"Origin": site.origin},
                                        json_body={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed", body
    status, page_ = await server.admin("GET", "/v1/sessions?status=active")
    assert status == 200 and page_["data"] == []
    status, page_ = await server.admin("GET", "/v1/sessions?status=ended")
    assert page_["data"] == []


STAND_IN = """
export async function connect(opts) {
  const rec = window.__standin = { serverUrl: opts.serverUrl, token: opts.token, roomName: opts.roomName,
    video: opts.video instanceof HTMLVideoElement, onTranscript: typeof opts.onTranscript,
    onEnd: typeof opts.onEnd, calls: [] };
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 64;
  const g = canvas.getContext("2d");
  let hue = 0;
  const timer = setInterval(() => { g.fillStyle = `hsl(${hue = (hue + 7) % 360}, 80%, 50%)`;
    g.fillRect(0, 0, 64, 64); }, 40);
  opts.video.srcObject = canvas.captureStream(25);
  // as the SDK does: interim deltas of one turn share an id, each with the whole text so far
  const deltas = ["Hello", "Hello from", "Hello from the stand-in"];
  deltas.forEach((text, i) => setTimeout(() => opts.onTranscript(
    { role: "assistant", text, final: i === deltas.length - 1, id: "turn-1" }), 50 + 20 * i));
  // as the adapter does with the SDK's AvatarEvent.ClientEvent
  if (typeof opts.onClientEvent === "function") {
    setTimeout(() => opts.onClientEvent({ name: "show_product", args: { product: "kettle" } }), 150);
  }
  return {
    async end() { rec.calls.push("end"); clearInterval(timer); },
    async setMicrophone(on) { rec.calls.push(`mic:${on}`); },
  };
}
"""


LIVEKIT_URL = "wss://livekit.test.invalid"


@pytest.fixture
async def livekit_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """The server in Runway mode against an engine whose consume answers a LiveKit-style
    ``wss://`` URL, as Runway does: the widget must use the ``livekit`` transport."""
    async with runway_mode(data_dir, redis_url, public_url=LIVEKIT_URL) as (h, _):
        yield h

async def _embed_on(server: ServerHarness, site: EmbedPage) -> None:
    """A site for ``site``'s origin, and ``site`` serving a widget with its key."""
    status, created = await server.admin("POST", "/v1/sites", {
        "name": "shop", "allowedOrigins": [site.origin], "avatarIds": ["cooking-teacher"],
        "maxConcurrentSessions": 2})
    assert status == 201, created
    site.html = embed_html(server.base, {"avatar": "cooking-teacher", "key": created["publishableKey"]})


async def test_livekit_transport_hands_credentials_to_the_sdk_module(livekit_server: ServerHarness) -> None:
    server = livekit_server
    async with EmbedPage("") as site:
        await _embed_on(server, site)
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.add_init_script(RECORD_EVENTS)
            served: list[str] = []

            async def stand_in(route: Any) -> None:
                served.append(route.request.url)
                await route.fulfill(status=200, body=STAND_IN, content_type="text/javascript",
                                    headers={"Access-Control-Allow-Origin": "*"})

            await page.route("**/vendor/runway-avatars.js", stand_in)
            await page.goto(site.origin + "/")
            await page.wait_for_function(f"() => customElements.get('{WIDGET}') !== undefined")
            started = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
            assert served == [server.base + "/vendor/runway-avatars.js"]
            handed = await page.evaluate("window.__standin")
            status, rec = await server.admin("GET", f"/v1/sessions/{started['sessionId']}")
            assert rec["status"] == "RUNNING" and rec["upstreamId"], rec
            assert handed["serverUrl"] == f"{LIVEKIT_URL}/v1/rtc/{rec['upstreamId']}", handed
            assert handed["token"] and handed["roomName"], handed
            assert handed["video"] and handed["onTranscript"] == "function" and handed["onEnd"] == "function"
            await page.locator(f"{WIDGET} .caption.assistant", has_text="Hello from the stand-in").wait_for()
            captions = await page.locator(f"{WIDGET} .caption.assistant").all_inner_texts()
            assert captions == ["Hello from the stand-in"], captions  # deltas of one turn: one line
            await page.wait_for_function("() => window.__events.some((e) => e.type === 'avatar-tool')")
            tool = (await events(page, "avatar-tool"))[0]
            assert tool["detail"] == {"name": "show_product", "args": {"product": "kettle"}}, tool
            assert tool["bubbles"] and tool["composed"]
            await page.locator(f"{WIDGET} .mic").click()
            detail = await page.evaluate(f"document.querySelector('{WIDGET}').end()")
            assert detail["reason"] == "client", detail
            calls = await page.evaluate("window.__standin.calls")
            assert "mic:false" in calls and "end" in calls, calls
    rec = await server.wait_for(started["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client", rec


async def test_pages_and_assets_are_served_safely(make_server: ServerFactory) -> None:
    server = await make_server()
    async with server.http.get(server.base + "/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/demo"
    status, body, headers = await server.call("GET", "/widget.js")
    assert status == 200 and "customElements.define" in body
    assert headers["Content-Type"].startswith("text/javascript")
    assert headers["Access-Control-Allow-Origin"] == "*" and "max-age" in headers["Cache-Control"]
    assert headers.get("ETag")
    status, _, headers = await server.call("GET", "/demo")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    for path in ("/static/demo.js", "/web/demo.css"):
        status, _, headers = await server.call("GET", path)
        assert status == 200 and headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css"), path
    for path in ("/static/..%2fpyproject.toml", "/static/.env", "/static/widget.py", "/vendor/..%2f..%2fREADME.md",
                 "/static/nothing.js"):
        status, body, _ = await server.call("GET", path)
        assert status == 404 and body["error"]["code"] == "file_not_found", (path, body)


async def test_demo_site_is_created_once_and_follows_the_setting(make_server: ServerFactory,
                                                                  redis_url: str, data_dir: Path) -> None:
    server = await make_server()
    key = await demo_key(server)
    await server.restart()
    assert await demo_key(server) == key  # idempotent across restarts
    status, sites = await server.admin("GET", "/v1/sites")
    demo = [s for s in sites["data"] if s["publishableKey"] == key]
    assert len(sites["data"]) == 1 and demo[0]["allowedOrigins"][0] == server.base
    assert "cooking-teacher" in demo[0]["avatarIds"]
    # an admin deleted it: the page says so, and the next start makes a new one
    status, _ = await server.admin("DELETE", f"/v1/sites/{demo[0]['id']}")
    assert status == 204
    status, body, _ = await server.call("GET", "/demo/config.json")
    assert status == 404 and body["error"]["code"] == "demo_site_missing", body
    await server.restart()
    assert await demo_key(server) != key
    await server.stop()
    off = ServerHarness(make_settings(data_dir, redis_url, demo=False, port=server.settings.port),
                        fast_engine_config())
    await off.start()
    try:
        status, body, _ = await off.call("GET", "/demo/config.json")
        assert status == 404 and body["error"]["code"] == "demo_disabled"
        status, body, _ = await off.call("GET", "/demo")
        assert status == 404
        status, sites = await off.admin("GET", "/v1/sites")
        assert sites["data"] == []  # turning the demo off removes its site (and key)
    finally:
        await off.stop_all()


async def test_widget_shows_the_queue_then_plays(make_server: ServerFactory) -> None:
    server = await make_server()
    await server.control("PATCH", "/config", {"concurrencyLimit": 1})
    status, first = await server.admin("POST", "/v1/sessions",
                                       {"avatar": {"type": "runway-preset", "presetId": "influencer"}})
    assert status == 201, first
    await server.wait_for(first["id"], lambda r: r["status"] == "READY")
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        await page.evaluate(f"() => {{ window.__start = document.querySelector('{WIDGET}').start(); }}")
        await page.wait_for_function(
            "() => window.__events.some((e) => e.detail.status === 'queued' && e.detail.queued)", timeout=15_000)
        assert "Waiting in line" in await widget_text(page)
        status, _ = await server.admin("DELETE", f"/v1/sessions/{first['id']}")  # frees the engine's slot
        assert status == 200
        started = await page.evaluate("window.__start")
        statuses = [e["detail"]["status"] for e in await events(page, "avatar-status")]
        assert statuses.index("queued") < statuses.index("connecting") < statuses.index("playing"), statuses
        await page.evaluate(f"document.querySelector('{WIDGET}').end()")
    rec = await server.wait_for(started["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client"


async def test_busy_site_says_when_to_try_again(make_server: ServerFactory) -> None:
    server = await make_server()
    status, sites = await server.admin("GET", "/v1/sites")
    status, _ = await server.admin("PATCH", f"/v1/sites/{sites['data'][0]['id']}", {"maxConcurrentSessions": 1})
    assert status == 200
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        first = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
        outcome = await page.evaluate(f"""() => {{
            const first = document.querySelector('{WIDGET}');
            const second = document.createElement('{WIDGET}');
            second.id = 'second';
            for (const a of ['key', 'avatar']) second.setAttribute(a, first.getAttribute(a));
            first.after(second);
            return second.start().then(() => ({{ok: true}}),
                                       (err) => ({{ok: false, reason: err.reason, message: err.message}}));
        }}""")
        assert outcome["ok"] is False and outcome["reason"] == "busy", outcome
        assert "busy" in outcome["message"] and "try again in" in outcome["message"], outcome
        text = await page.evaluate("document.getElementById('second').shadowRoot.textContent")
        assert "All avatars are busy right now" in text
        assert await page.evaluate(f"document.querySelector('{WIDGET}').status") == "playing"  # untouched
        await page.evaluate(f"document.querySelector('{WIDGET}').end()")
    rec = await server.wait_for(first["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client"


async def test_livekit_without_the_sdk_bundle_fails_clearly_and_ends_the_session(
        livekit_server: ServerHarness) -> None:
    server = livekit_server
    async with EmbedPage("") as site:
        await _embed_on(server, site)
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.add_init_script(RECORD_EVENTS)
            await page.route("**/vendor/runway-avatars.js", lambda route: route.fulfill(status=404, body="{}"))
            await page.goto(site.origin + "/")
            await page.wait_for_function(f"() => customElements.get('{WIDGET}') !== undefined")
            outcome = await page.evaluate(f"""() => document.querySelector('{WIDGET}').start().then(
                () => ({{ok: true}}), (err) => ({{ok: false, reason: err.reason, message: err.message}}))""")
            assert outcome["ok"] is False and outcome["reason"] == "media_failed", outcome
            assert "runway-avatars.js" in outcome["message"]
            ended = await wait_ended(page, 5)
    rec = await server.wait_for(ended["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client", rec  # the widget ended it: nothing runs on unseen


async def test_a_dropped_signal_socket_is_reopened_within_the_grace(make_server: ServerFactory) -> None:
    server = await make_server()  # abandon grace: 1 s
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        started = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
        await page.evaluate(f"document.querySelector('{WIDGET}')._call.ws.close()")  # the network blips
        await page.wait_for_function(
            f"() => document.querySelector('{WIDGET}')._call.ws?.readyState === WebSocket.OPEN", timeout=5_000)
        await asyncio.sleep(2.0)  # longer than the grace: had it not come back, the session would end
        status, rec = await server.admin("GET", f"/v1/sessions/{started['sessionId']}")
        assert rec["status"] == "RUNNING", rec
        assert await page.evaluate(f"document.querySelector('{WIDGET}').status") == "playing"
        assert await events(page, "avatar-ended") == []
        detail = await page.evaluate(f"document.querySelector('{WIDGET}').end()")
        assert detail["reason"] == "client"


async def test_widget_on_a_customer_site_plays_from_the_engine(make_server: ServerFactory) -> None:
    """The embedding case: another origin loads widget.js (CORS module), starts with its own
    site's key (CORS POST), and the engine's media offer is posted cross-origin too."""
    server = await make_server()
    async with EmbedPage("") as site:
        status, created = await server.admin("POST", "/v1/sites", {
            "name": "shop", "allowedOrigins": [site.origin], "avatarIds": ["fashion-designer"],
            "maxConcurrentSessions": 1, "maxDuration": 60})
        assert status == 201, created
        # no server attribute: the widget talks to where widget.js came from
        site.html = embed_html(server.base, {"avatar": "fashion-designer", "key": created["publishableKey"]})
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.add_init_script(RECORD_EVENTS)
            await page.goto(site.origin + "/")
            await page.wait_for_function(f"() => customElements.get('{WIDGET}') !== undefined")
            started = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
            probe = await page.evaluate(VIDEO_PROBE, WIDGET)
            assert probe["frames"] == 20 and probe["lastTime"] > probe["firstTime"] and probe["lumaSd"] > 10, probe
            status, rec = await server.admin("GET", f"/v1/sessions/{started['sessionId']}")
            assert rec["status"] == "RUNNING" and rec["maxDuration"] == 60, rec  # the site's ceiling
            detail = await page.evaluate(f"document.querySelector('{WIDGET}').end()")
            assert detail["reason"] == "client"
    rec = await server.wait_for(started["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client"


async def test_a_client_event_tool_reaches_the_page_as_avatar_tool(make_server: ServerFactory) -> None:
    """Issue 12: the site's client_event tool; the visitor's message names it; the engine sends Runway's
    {type: "client_event", tool, args} on the data channel; the widget dispatches `avatar-tool`."""
    server = await make_server()
    async with EmbedPage("") as site:
        status, created = await server.admin("POST", "/v1/sites", {
            "name": "shop", "allowedOrigins": [site.origin], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 1, "tools": [{
                "type": "client_event", "name": "show_product", "description": "Show a product card",
                "parameters": [{"name": "product", "description": "which product", "type": "string"}]}]})
        assert status == 201, created
        site.html = embed_html(server.base, {"avatar": "cooking-teacher", "key": created["publishableKey"]})
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.add_init_script(RECORD_EVENTS)
            await page.goto(site.origin + "/")
            await page.wait_for_function(f"() => customElements.get('{WIDGET}') !== undefined")
            started = await page.evaluate(f"document.querySelector('{WIDGET}').start()")
            await page.wait_for_function(
                f"() => document.querySelector('{WIDGET}').sendMessage('Please show product blue kettle')",
                timeout=10_000)
            await page.wait_for_function("() => window.__events.some((e) => e.type === 'avatar-tool')",
                                         timeout=15_000)
            tool = (await events(page, "avatar-tool"))[0]
            assert tool["detail"] == {"name": "show_product", "args": {"product": "blue kettle"}}, tool
            assert tool["bubbles"] and tool["composed"]
            await page.locator(f"{WIDGET} .caption.assistant", has_text="show product: done").wait_for()
            detail = await page.evaluate(f"document.querySelector('{WIDGET}').end()")
            assert detail["reason"] == "client"
    await server.wait_for(started["sessionId"], lambda r: r["status"] == "ENDED")


async def test_demo_lists_a_custom_avatar_added_to_its_site_by_name(make_server: ServerFactory) -> None:
    from tests.api.kb_helpers import make_avatar

    server = await make_server()
    avatar = await make_avatar(server, name="Harbour guide")
    status, sites = await server.admin("GET", "/v1/sites")
    demo = sites["data"][0]
    status, patched = await server.admin("PATCH", f"/v1/sites/{demo['id']}",
                                         {"avatarIds": [*demo["avatarIds"], avatar["id"]]})
    assert status == 200, patched
    status, config, _ = await server.call("GET", "/demo/config.json")
    assert status == 200
    listed = {a["id"]: a["name"] for a in config["avatars"]}
    assert listed[avatar["id"]] == "Harbour guide" and listed["cooking-teacher"] == "Cooking teacher"


async def test_start_button_then_failed_and_avatar_ended_messages(make_server: ServerFactory) -> None:
    """A visitor presses the button: a session the avatar service fails says so; the next one
    plays, and when the avatar ends the call (END_CALL on the data channel) the widget says that."""
    server = await make_server()
    await server.control("POST", "/fail-next", {"count": 1, "failureCode": "capacity", "failure": "no GPU"})
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        button = page.locator(f"{WIDGET} .start")
        await button.click()
        ended = await wait_ended(page, 20)
        assert ended["reason"] == "upstream_failed", ended
        assert "The avatar service failed" in await widget_text(page)
        failed = await server.admin("GET", f"/v1/sessions/{ended['sessionId']}")
        assert failed[1]["status"] == "ENDED" and failed[1]["endReason"] == "upstream_failed", failed

        await button.wait_for(state="visible", timeout=5_000)  # ready to try again
        await page.evaluate("window.__events = []")
        await button.click()
        await page.wait_for_function(
            "() => window.__events.some((e) => e.type === 'avatar-status' && e.detail.status === 'playing')",
            timeout=20_000)
        # the avatar ends the call: END_CALL on the widget's data channel, as Runway's SDK sends it
        await page.evaluate(f"document.querySelector('{WIDGET}')._call.channel.send("
                            "JSON.stringify({type: 'END_CALL'}))")
        ended = await wait_ended(page, 15)
        assert ended["reason"] == "upstream_completed", ended
        assert "The avatar ended the conversation" in await widget_text(page)
    rec = await server.wait_for(ended["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "upstream_completed", rec


# --------------------------------------------------------------------------- the waiting room

async def _connect_holder(server: ServerHarness) -> str:
    """An admin session (``/v1/sessions/connect``) holding the one upstream slot: RUNNING at once."""
    status, holder, _ = await server.call("POST", "/v1/sessions/connect", token=server.settings.admin_token,
                                          json_body={"avatarId": "cooking-teacher", "maxDuration": 60})
    assert status == 200, holder
    return holder["sessionId"]


async def test_widget_waits_its_turn_in_the_waiting_room_then_plays(make_server: ServerFactory) -> None:
    """upstream_concurrency=1 and the slot held: the widget's start waits in the server's room,
    shows its place and wait from the signal frames (and sends them in avatar-status), and plays
    once the holder ends."""
    server = await make_server(upstream_concurrency=1, start_rate_per_minute=0)
    holder = await _connect_holder(server)
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        await page.evaluate(f"() => {{ window.__start = document.querySelector('{WIDGET}').start(); }}")
        await page.wait_for_function(
            "() => window.__events.some((e) => e.detail.status === 'queued' && e.detail.position === 1)",
            timeout=15_000)
        text = await widget_text(page)
        assert "You're number 1 in line — about " in text, text
        assert await page.locator(f"{WIDGET} .spinner").is_visible()  # the waiting visuals stay
        waiting = [e["detail"] for e in await events(page, "avatar-status") if e["detail"]["status"] == "queued"]
        detail = waiting[-1]
        assert detail["queued"] is True and detail["position"] == 1, detail
        assert isinstance(detail["etaSeconds"], int | float) and detail["etaSeconds"] > 0, detail
        assert detail["message"].startswith("You're number 1 in line — about "), detail
        assert detail["message"] in text
        session_id = detail["sessionId"]
        rec = await server.wait_for(session_id, lambda r: r["status"] == "PROVISIONING")
        assert rec["queued"] and rec["position"] == 1 and rec["upstreamId"] is None, rec
        assert await page.evaluate(f"document.querySelector('{WIDGET}').status") == "queued"

        status, _ = await server.admin("DELETE", f"/v1/sessions/{holder}")  # frees the slot
        assert status == 200
        started = await page.evaluate("window.__start")
        assert started["sessionId"] == session_id
        probe = await page.evaluate(VIDEO_PROBE, WIDGET)
        assert probe["frames"] == 20 and probe["lastTime"] > probe["firstTime"] and probe["lumaSd"] > 10, probe
        details = [e["detail"] for e in await events(page, "avatar-status")]
        statuses = [d["status"] for d in details]
        assert statuses.index("queued") < statuses.index("provisioning") < statuses.index("connecting") \
            < statuses.index("playing"), statuses
        # the place and wait only while in line; the other states carry none
        assert all(d["position"] is None and d["etaSeconds"] is None for d in details if d["status"] != "queued")
        assert "in line" not in await widget_text(page)
        rec = await server.wait_for(session_id, lambda r: r["status"] == "RUNNING")
        assert rec["position"] is None and rec["etaSeconds"] is None, rec
        await page.evaluate(f"document.querySelector('{WIDGET}').end()")
        assert errors == []
    rec = await server.wait_for(session_id, lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "client"


async def test_a_wait_that_runs_out_says_so(make_server: ServerFactory) -> None:
    """The wait reaches the provisioning deadline (3 s): the session ends queue_timeout and the
    widget says the wait ran out; the visitor can try again."""
    server = await make_server(upstream_concurrency=1, start_rate_per_minute=0, provision_timeout=3.0)
    holder = await _connect_holder(server)
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.add_init_script(RECORD_EVENTS)
        await page.goto(server.base + "/demo")
        await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
        outcome = await page.evaluate(f"""() => document.querySelector('{WIDGET}').start().then(
            () => ({{ok: true}}), (err) => ({{ok: false, reason: err.reason, message: err.message}}))""")
        assert outcome["ok"] is False and outcome["reason"] == "queue_timeout", outcome
        assert "the wait ran out" in outcome["message"], outcome
        ended = await wait_ended(page, 5)
        assert ended["reason"] == "queue_timeout" and ended["sessionId"], ended
        queued = [e["detail"] for e in await events(page, "avatar-status") if e["detail"]["status"] == "queued"]
        assert queued and queued[0]["position"] == 1, queued  # it did wait in line first
        text = await widget_text(page)
        assert "Too many people are talking to the avatar right now, and the wait ran out" in text, text
        assert await page.locator(f"{WIDGET} .start").is_visible()  # ready to try again
    rec = await server.wait_for(ended["sessionId"], lambda r: r["status"] == "ENDED")
    assert rec["endReason"] == "queue_timeout" and rec["upstreamId"] is None, rec
    status, _ = await server.admin("DELETE", f"/v1/sessions/{holder}")
    assert status == 200


async def test_a_full_waiting_room_says_when_to_come_back(make_server: ServerFactory) -> None:
    """A room with no places (size 0) and the slot held: the start on a customer's page (another
    origin: Retry-After must be readable through CORS) is refused 503 server_busy, and the widget
    says to try again in the time Retry-After gives; nothing was started."""
    server = await make_server(upstream_concurrency=1, start_rate_per_minute=0, waiting_room_size=0)
    holder = await _connect_holder(server)
    async with EmbedPage("") as site:
        await _embed_on(server, site)
        key = site.html.split('key="')[1].split('"')[0]
        status, body, headers = await server.call(
            "POST", "/v1/sessions", token=key, headers={"Origin": site.origin},
            json_body={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}})
        assert status == 503 and body["error"]["code"] == "server_busy", body
        retry_after = float(headers["Retry-After"])
        async with chromium() as ctx:
            page = await ctx.new_page()
            await page.add_init_script(RECORD_EVENTS)
            await page.goto(site.origin + "/")
            await page.wait_for_function(f"() => customElements.get('{WIDGET}') !== undefined")
            outcome = await page.evaluate(f"""() => document.querySelector('{WIDGET}').start().then(
                () => ({{ok: true}}), (err) => ({{ok: false, reason: err.reason, message: err.message,
                                                 status: err.status, retryAfter: err.retryAfter}}))""")
            assert outcome["ok"] is False and outcome["reason"] == "server_busy", outcome
            # the wait comes from when the slot's holder ends: a moment later, a moment less
            assert outcome["status"] == 503 and 1 <= outcome["retryAfter"] <= retry_after, outcome
            expected = await page.evaluate(
                f"import('{server.base}/widget.js').then((m) => m.aboutWait({outcome['retryAfter']}))")
            assert f"Please try again in {expected}." in outcome["message"], outcome
            ended = await wait_ended(page, 5)
            assert ended["reason"] == "server_busy" and ended["sessionId"] is None, ended
            text = await widget_text(page)
            assert "the line is full" in text and f"try again in {expected}" in text, text
    status, page_ = await server.admin("GET", "/v1/sessions?status=active")
    assert [s["id"] for s in page_["data"]] == [holder]  # nothing else was started
    status, _ = await server.admin("DELETE", f"/v1/sessions/{holder}")
    assert status == 200
