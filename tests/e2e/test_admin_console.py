"""The admin console (/admin) in real headless Chromium against the server on its embedded defaults.

One journey through every tab, each step checked twice — on the page, and in the API's state
afterwards: a wrong token is refused with the API's own error; the right one signs in (and is
kept in sessionStorage only, never in a URL); a document and an avatar (image file → data URI)
are created; linking them shows the avatar's knowledge budget, and a link past 50,000 tokens
shows the 422 ``knowledge_budget_exceeded`` message and changes nothing; a site is created,
its publishable key shown and rotated (the old key stops working); a live session started
through the API shows with its countdown and is ended from the console (``ENDED/admin``).
The waiting room (a server with ``upstream_concurrency=1``) shows its waiting starts per site, the
upstream slots, the request budget, the wait per place and, while the event loop lags, why the
server refuses starts. The page must raise no console error (a CSP violation would be one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from avatar_server.appkeys import WEBHOOKS

from ..harness import ServerHarness, assert_no_leaks, fast_engine_config, make_settings
from ..webhook_receiver import Receiver, verify
from .browser_helpers import chromium

pytestmark = pytest.mark.timeout(180)

WAIT_MS = 20_000


def png_bytes(size: int = 96) -> bytes:
    """A real RGB PNG (a gradient), written by hand: no imaging library needed."""
    raw = b"".join(b"\x00" + b"".join(bytes((x * 2 % 256, y * 2 % 256, 160)) for x in range(size))
                   for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- Chromium

EXPECTED_HTTP_ERROR = "Failed to load resource: the server responded with a status of"


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[tuple[Page, list[str]]]:
    """A page in a fresh headless Chromium (browser_helpers.chromium: Debian's, throw-away
    profile), and the list of problems it reported: console errors (CSP violations are some),
    uncaught exceptions, failed loads of the page's own files. The console's expected API
    refusals (401, 422 …) are not problems: Chromium logs each failed fetch as a console
    error, so those lines are left out."""
    problems: list[str] = []
    async with chromium() as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" and not m.text.startswith(EXPECTED_HTTP_ERROR) else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("response", lambda r: problems.append(f"{r.status} for {r.url}")
                if r.status >= 400 and "/v1/" not in r.url else None)
        yield page, problems


async def shot(page: Page, name: str) -> None:
    """With AVATAR_SERVER_SCREENSHOTS=<dir>, keep a screenshot of this step (docs/admin-console.md uses them)."""
    folder = os.environ.get("AVATAR_SERVER_SCREENSHOTS")
    if folder:
        await page.screenshot(path=os.path.join(folder, f"admin-{name}.png"), full_page=True)


async def api(server: ServerHarness, method: str, path: str, body: Any = None) -> Any:
    status, data = await server.admin(method, path, body)
    assert status < 300, (method, path, status, data)
    return data


async def test_admin_console_journey(server: ServerHarness) -> None:
    token = server.settings.admin_token
    async with chromium_page() as (page, problems):
        page.on("dialog", lambda dialog: dialog.accept())  # the console confirms deletes, rotations, ends
        await page.goto(server.base + "/admin")

        # --- sign in: a wrong token shows the API's error, the right one opens the console
        await page.fill("#token", "adm_wrong_" + "z" * 24)
        await page.click("#login-form button[type=submit]")
        notice = page.locator("#notice")
        await notice.wait_for(state="visible", timeout=WAIT_MS)
        assert "HTTP 401" in await notice.inner_text()
        assert await page.locator("#console").is_hidden()
        assert await page.evaluate("sessionStorage.length") == 0

        await page.fill("#token", token)
        await page.click("#login-form button[type=submit]")
        await page.locator("#console").wait_for(state="visible", timeout=WAIT_MS)
        assert await page.evaluate("Object.values(sessionStorage)") == [token]
        assert token not in page.url

        # --- a knowledge document
        await page.click("#tab-btn-documents")
        await page.click("#document-new")
        await page.fill("#document-form [name=name]", "Opening hours")
        await page.fill("#document-form [name=content]",
                        "The shop opens at nine and closes at six, Monday to Saturday. On Sundays it is closed.")
        await page.click("#document-form button[type=submit]")
        doc_row = page.locator("#documents-table tbody tr", has_text="Opening hours")
        await doc_row.wait_for(timeout=WAIT_MS)
        docs = (await api(server, "GET", "/v1/documents"))["data"]
        assert [d["name"] for d in docs] == ["Opening hours"]
        doc = docs[0]
        assert doc["tokens"] > 0
        assert (await doc_row.locator("td.tokens").inner_text()).replace(",", "") == str(doc["tokens"])
        assert await doc_row.get_attribute("data-id") == doc["id"]

        # --- an avatar with a preset voice and an image file (sent as a data: URI)
        await page.click("#tab-btn-avatars")
        await page.click("#avatar-new")
        await page.fill("#avatar-form [name=name]", "Shop helper")
        await page.select_option("#avatar-form [name=voice]", "clara")
        await page.fill("#avatar-form [name=personality]", "A friendly assistant of a small shop.")
        await page.fill("#avatar-form [name=startScript]", "Hello! Ask me about the shop.")
        await page.set_input_files("#avatar-form [name=imageFile]",
                                   files=[{"name": "face.png", "mimeType": "image/png", "buffer": png_bytes()}])
        await page.locator("#avatar-image-preview").wait_for(state="visible", timeout=WAIT_MS)
        await shot(page, "avatar-form")
        await page.click("#avatar-form button[type=submit]")
        avatar_row = page.locator("#avatars-table tbody tr", has_text="Shop helper")
        await avatar_row.wait_for(timeout=WAIT_MS)
        avatars = (await api(server, "GET", "/v1/avatars"))["data"]
        assert [a["name"] for a in avatars] == ["Shop helper"]
        avatar = avatars[0]
        assert avatar["voice"] == {"type": "runway-live-preset", "presetId": "clara"}
        assert avatar["startScript"] == "Hello! Ask me about the shop."
        assert avatar["status"] in ("PROCESSING", "READY")

        # --- link the document: the budget shows its tokens
        await avatar_row.locator("[data-action=knowledge]").click()
        await page.locator("#knowledge").wait_for(state="visible", timeout=WAIT_MS)
        assert await page.locator("#knowledge-total").get_attribute("data-total") == "0"
        await page.select_option("#knowledge-select", doc["id"])
        await page.click("#knowledge-link-form button[type=submit]")
        await page.locator(f"#knowledge-linked tr[data-id='{doc['id']}']").wait_for(timeout=WAIT_MS)
        assert await page.locator("#knowledge-total").get_attribute("data-total") == str(doc["tokens"])
        assert float(await page.locator("#knowledge-meter").get_attribute("max")) == 50_000
        assert await page.eval_on_selector("#knowledge-meter", "m => m.value") == doc["tokens"]
        assert "/ 50,000 tokens" in await page.locator("#knowledge-total").inner_text()
        assert (await api(server, "GET", f"/v1/avatars/{avatar['id']}"))["documentIds"] == [doc["id"]]
        used_by = (await api(server, "GET", f"/v1/documents/{doc['id']}"))["usedBy"]
        assert [u["id"] for u in used_by] == [avatar["id"]]

        # --- a document past the budget: the 422 is shown, nothing changes
        # random base64 costs about 0.68 o200k tokens a character (100,000 characters: ~68,000 tokens)
        content = base64.b64encode(secrets.token_bytes(75_000)).decode()
        big = await api(server, "POST", "/v1/documents", {"name": "Huge manual", "content": content})
        assert big["tokens"] + doc["tokens"] > 50_000, big["tokens"]
        await page.click("#avatar-refresh")
        await page.locator("#knowledge-select option", has_text="Huge manual").wait_for(state="attached",
                                                                                         timeout=WAIT_MS)
        await page.select_option("#knowledge-select", big["id"])
        await page.click("#knowledge-link-form button[type=submit]")
        await page.locator("#notice[data-code=knowledge_budget_exceeded]").wait_for(timeout=WAIT_MS)
        text = await notice.inner_text()
        assert "knowledge_budget_exceeded" in text and "HTTP 422" in text
        assert "50,000" in text or "50000" in text  # the limit, from the API's message or detail
        assert (await api(server, "GET", f"/v1/avatars/{avatar['id']}"))["documentIds"] == [doc["id"]]
        assert await page.locator("#knowledge-total").get_attribute("data-total") == str(doc["tokens"])
        await shot(page, "knowledge")

        # --- unlink from the console, then link again (API state follows each time)
        await page.locator(f"#knowledge-linked tr[data-id='{doc['id']}'] [data-action=unlink]").click()
        await page.locator(f"#knowledge-linked tr[data-id='{doc['id']}']").wait_for(state="detached",
                                                                                      timeout=WAIT_MS)
        assert (await api(server, "GET", f"/v1/avatars/{avatar['id']}"))["documentIds"] == []
        await page.select_option("#knowledge-select", doc["id"])
        await page.click("#knowledge-link-form button[type=submit]")
        await page.locator(f"#knowledge-linked tr[data-id='{doc['id']}']").wait_for(timeout=WAIT_MS)
        assert (await api(server, "GET", f"/v1/avatars/{avatar['id']}"))["documentIds"] == [doc["id"]]

        # --- a site for this page's origin and the avatar: its key is shown, then rotated
        await page.click("#tab-btn-sites")
        await page.click("#site-new")
        await page.fill("#site-form [name=name]", "Shop website")
        origin = server.base
        assert await page.input_value("#site-form [name=allowedOrigins]") == origin
        await page.check(f"#site-avatar-choices input[value='{avatar['id']}']")
        await page.fill("#site-form [name=maxConcurrentSessions]", "2")
        await page.fill("#site-form [name=maxDuration]", "120")
        await page.click("#site-form button[type=submit]")
        site_row = page.locator("#sites-table tbody tr", has_text="Shop website")
        await site_row.wait_for(timeout=WAIT_MS)
        sites = (await api(server, "GET", "/v1/sites"))["data"]
        site = next(s for s in sites if s["name"] == "Shop website")
        assert site["allowedOrigins"] == [origin]
        assert site["avatarIds"] == [avatar["id"]]
        assert (site["maxConcurrentSessions"], site["maxDuration"]) == (2, 120)
        old_key = site["publishableKey"]
        assert await site_row.locator("code.key").inner_text() == old_key
        # the embed snippet opened for the new site
        await page.locator("#embed").wait_for(state="visible", timeout=WAIT_MS)
        snippet = await page.input_value("#embed-snippet")
        assert f'src="{origin}/widget.js"' in snippet
        assert f'key="{old_key}"' in snippet and f'avatar="{avatar["id"]}"' in snippet

        await site_row.locator("[data-action=rotate]").click()
        await page.wait_for_function(
            "([id, old]) => { const k = document.querySelector(`#sites-table tr[data-id='${id}'] code.key`);"
            " return k && k.textContent !== old; }", arg=[site["id"], old_key], timeout=WAIT_MS)
        new_key = (await api(server, "GET", f"/v1/sites/{site['id']}"))["publishableKey"]
        assert new_key != old_key and new_key.startswith("pk_")
        assert await site_row.locator("code.key").inner_text() == new_key
        assert f'key="{new_key}"' in await page.input_value("#embed-snippet")
        await shot(page, "sites")
        status, body, _ = await server.call(
            "POST", "/v1/sessions", token=old_key, headers={"Origin": origin},
            json_body={"avatar": {"type": "custom", "avatarId": avatar["id"]}})
        assert status == 401, (status, body)  # the old key is dead

        # --- a live session (started through the API) shows with its countdown and is ended here
        connected = await api(server, "POST", "/v1/sessions/connect",
                              {"avatarId": "game-character", "maxDuration": 60})
        session_id = connected["sessionId"]
        await page.click("#tab-btn-sessions")
        row = page.locator(f"#sessions-table tr[data-id='{session_id}']")
        await row.wait_for(timeout=WAIT_MS)
        assert await row.get_attribute("data-status") == "RUNNING"
        assert "game-character" in await row.inner_text()
        left = await row.locator("td.countdown").inner_text()
        assert re.fullmatch(r"[01]:\d\d", left), left
        await shot(page, "sessions")
        await row.locator("[data-action=end]").click()
        await row.wait_for(state="detached", timeout=WAIT_MS)  # gone from the live list
        record = await server.wait_for(session_id, lambda s: s["status"] == "ENDED")
        assert record["endReason"] == "admin"
        await page.select_option("#sessions-status", "ended")
        ended_row = page.locator(f"#sessions-table tr[data-id='{session_id}']")
        await ended_row.wait_for(timeout=WAIT_MS)
        assert "admin" in await ended_row.inner_text()

        # --- the token never reached a URL; the page raised no error (CSP violations included)
        assert token not in page.url
        assert not problems, problems


async def test_admin_console_edits_deletes_and_field_errors(server: ServerHarness) -> None:
    """Edits and deletes through the console land in the API; a refused input shows the API's
    code and field; a reload keeps the tab signed in, signing out forgets the token."""
    token = server.settings.admin_token
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    doc = await api(server, "POST", "/v1/documents", {"name": "Returns", "content": "Returns within 30 days."})
    avatar = await api(server, "POST", "/v1/avatars", {
        "name": "Clerk", "referenceImage": image, "personality": "Helpful.", "startScript": "Hi there.",
        "voice": {"type": "runway-live-preset", "presetId": "max"}, "documentIds": [doc["id"]]})
    site = await api(server, "POST", "/v1/sites", {
        "name": "Shop", "allowedOrigins": ["https://shop.example"], "avatarIds": [avatar["id"]],
        "maxConcurrentSessions": 1, "maxDuration": 60})

    async with chromium_page() as (page, problems):
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(server.base + "/admin")
        await page.fill("#token", token)
        await page.click("#login-form button[type=submit]")
        await page.locator("#console").wait_for(state="visible", timeout=WAIT_MS)
        await page.reload()  # the tab keeps its token (sessionStorage) …
        await page.locator("#console").wait_for(state="visible", timeout=WAIT_MS)
        row = page.locator(f"#avatars-table tr[data-id='{avatar['id']}']")
        await row.wait_for(timeout=WAIT_MS)
        assert "Clerk" in await row.inner_text() and "max" in await row.inner_text()

        # --- edit the avatar: new name and voice, start script cleared, image kept
        await row.locator("[data-action=edit]").click()
        assert await page.input_value("#avatar-form [name=startScript]") == "Hi there."
        await page.fill("#avatar-form [name=name]", "Head clerk")
        await page.select_option("#avatar-form [name=voice]", "nina")
        await page.fill("#avatar-form [name=startScript]", "")
        await page.click("#avatar-form button[type=submit]")
        await page.locator(f"#avatars-table tr[data-id='{avatar['id']}']", has_text="Head clerk").wait_for(
            timeout=WAIT_MS)
        changed = await api(server, "GET", f"/v1/avatars/{avatar['id']}")
        assert changed["name"] == "Head clerk"
        assert changed["voice"] == {"type": "runway-live-preset", "presetId": "nina"}
        assert changed["startScript"] is None
        assert changed["documentIds"] == [doc["id"]]

        # --- edit the document: the new token count shows, and usedBy names the avatar
        await page.click("#tab-btn-documents")
        doc_row = page.locator(f"#documents-table tr[data-id='{doc['id']}']")
        await doc_row.wait_for(timeout=WAIT_MS)
        assert "Head clerk" in await doc_row.locator("td.used-by").inner_text()
        await doc_row.locator("[data-action=edit]").click()
        await page.locator("#document-form").wait_for(state="visible", timeout=WAIT_MS)  # after its GET
        assert await page.input_value("#document-form [name=content]") == "Returns within 30 days."
        longer = "Returns within 30 days, with the receipt. Sale items cannot be returned. " * 5
        await page.fill("#document-form [name=content]", longer)
        await page.click("#document-form button[type=submit]")
        await page.locator("#notice.info", has_text="saved").wait_for(timeout=WAIT_MS)
        edited = await api(server, "GET", f"/v1/documents/{doc['id']}")
        assert edited["content"] == longer and edited["tokens"] > doc["tokens"]
        # the "saved" notice shows before the table is re-read: wait for the new count to be painted
        await doc_row.locator("td.tokens", has_text=re.compile(rf"^\s*{edited['tokens']:,}\s*$")).wait_for(
            timeout=WAIT_MS)

        # --- a refused site shows the API's code and field, and nothing is written
        await page.click("#tab-btn-sites")
        await page.click("#site-new")
        await page.fill("#site-form [name=name]", "Bad")
        await page.fill("#site-form [name=allowedOrigins]", "shop.example/path")
        await page.check(f"#site-avatar-choices input[value='{avatar['id']}']")
        await page.click("#site-form button[type=submit]")
        notice = page.locator("#notice.error")
        await notice.wait_for(timeout=WAIT_MS)
        text = await notice.inner_text()
        assert "HTTP 422" in text and "field allowedOrigins" in text, text
        assert [s["name"] for s in (await api(server, "GET", "/v1/sites"))["data"]] == ["Shop"]
        await page.click("#site-form [data-cancel]")

        # --- edit the site: another origin, no own maxDuration (the server's cap applies)
        site_row = page.locator(f"#sites-table tr[data-id='{site['id']}']")
        await site_row.locator("[data-action=edit]").click()
        await page.fill("#site-form [name=allowedOrigins]", "https://shop.example\nhttps://www.shop.example")
        await page.fill("#site-form [name=maxDuration]", "")
        await page.click("#site-form button[type=submit]")
        await site_row.locator("td.origins", has_text="https://www.shop.example").wait_for(timeout=WAIT_MS)
        edited_site = await api(server, "GET", f"/v1/sites/{site['id']}")
        assert edited_site["allowedOrigins"] == ["https://shop.example", "https://www.shop.example"]
        assert edited_site["maxDuration"] is None
        assert edited_site["publishableKey"] == site["publishableKey"]  # editing keeps the key

        # --- deletes: site, avatar, document
        await site_row.locator("[data-action=delete]").click()
        await site_row.wait_for(state="detached", timeout=WAIT_MS)
        assert (await server.admin("GET", f"/v1/sites/{site['id']}"))[0] == 404
        await page.click("#tab-btn-avatars")
        await row.locator("[data-action=delete]").click()
        await row.wait_for(state="detached", timeout=WAIT_MS)
        assert (await server.admin("GET", f"/v1/avatars/{avatar['id']}"))[0] == 404
        await page.click("#tab-btn-documents")
        await doc_row.locator("[data-action=delete]").click()
        await doc_row.wait_for(state="detached", timeout=WAIT_MS)
        assert (await server.admin("GET", f"/v1/documents/{doc['id']}"))[0] == 404

        # --- signing out forgets the token
        await page.click("#sign-out")
        await page.locator("#login").wait_for(state="visible", timeout=WAIT_MS)
        assert await page.evaluate("sessionStorage.length") == 0
        assert not problems, problems


# --------------------------------------------------------------------------- the waiting room

@pytest.fixture
async def room_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """One upstream slot (``upstream_concurrency=1``), a budget of 7 upstream requests a second,
    no per-visitor start rate (several starts come from one address)."""
    settings = make_settings(data_dir, redis_url, upstream_concurrency=1, upstream_max_rps=7,
                             start_rate_per_minute=0)
    h = await ServerHarness(settings, fast_engine_config()).start()
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def test_admin_console_shows_the_waiting_room(room_server: ServerHarness) -> None:
    server = room_server
    token = server.settings.admin_token
    origin = "https://shop.example"
    site = await api(server, "POST", "/v1/sites", {
        "name": "Corner shop", "allowedOrigins": [origin], "avatarIds": ["cooking-teacher"],
        "maxConcurrentSessions": 5})
    holder = (await api(server, "POST", "/v1/sessions/connect",
                        {"avatarId": "cooking-teacher", "maxDuration": 60}))["sessionId"]
    body = {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}, "maxDuration": 60}
    waiting: list[str] = []
    for _ in range(2):  # two visitors of the site …
        status, created, _ = await server.call("POST", "/v1/sessions", token=site["publishableKey"],
                                               headers={"Origin": origin}, json_body=body)
        assert status == 201, created
        waiting.append(created["id"])
    waiting.append((await api(server, "POST", "/v1/sessions", body))["id"])  # … and one admin start
    records = {sid: await api(server, "GET", f"/v1/sessions/{sid}") for sid in waiting}
    assert all(r["queued"] and r["position"] for r in records.values()), records
    room = await api(server, "GET", "/v1/waiting-room")
    assert room["waiting"] == 3 and room["upstreamAlive"] == 1 and room["upstreamLimit"] == 1, room

    async with chromium_page() as (page, problems):
        await page.goto(server.base + "/admin")
        await page.fill("#token", token)
        await page.click("#login-form button[type=submit]")
        await page.locator("#console").wait_for(state="visible", timeout=WAIT_MS)
        await page.click("#tab-btn-sessions")

        # --- waiting per site (by name) and the admin lane
        site_lane = page.locator(f"#room-lanes tr[data-site-id='{site['id']}']")
        await site_lane.wait_for(timeout=WAIT_MS)
        assert await site_lane.get_attribute("data-waiting") == "2"
        assert re.fullmatch(r"Corner shop\s+2", (await site_lane.inner_text()).strip())
        admin_lane = page.locator("#room-lanes tr[data-site-id='']")
        assert re.fullmatch(r"admin API\s+1", (await admin_lane.inner_text()).strip())
        assert await page.locator("#room-empty").is_hidden()
        figures = page.locator("#room")
        assert "3 of 1,000 places" in await page.locator("#room-waiting").inner_text()

        # --- the upstream slots, the request budget, the wait per place, no refusal
        slots = await page.locator("#room-slots").inner_text()
        assert "1 of 1 in use" in slots and "limit configured" in slots, slots
        budget = page.locator("#room-budget")
        assert await budget.get_attribute("data-max") == "7"
        used = int(await budget.get_attribute("data-used"))
        assert 0 <= used <= 7
        assert f"{used} of 7 requests per second" in await budget.inner_text()
        # before any start was served from the room, the wait is when the slot's holder ends: it shrinks
        eta = float(await page.locator("#room-eta").get_attribute("data-eta"))
        assert room["etaPerPlaceSeconds"] - 10 <= eta <= room["etaPerPlaceSeconds"], (eta, room)
        shown = f"~{round(eta)} s" if eta < 90 else f"~{round(eta / 60)} min"
        assert f"{shown} per place" in await page.locator("#room-eta").inner_text()
        assert (await page.locator("#room-busy").inner_text()).startswith("No")
        assert await page.locator("#room-busy").get_attribute("data-busy") == ""
        # the live list names each waiting start's place
        for sid, rec in records.items():
            row = page.locator(f"#sessions-table tr[data-id='{sid}']")
            assert f"#{rec['position']} in line" in await row.inner_text()
        await figures.scroll_into_view_if_needed()
        await shot(page, "waiting-room")

        # --- the holder ends: the next start is served and the panel follows on its own
        await api(server, "DELETE", f"/v1/sessions/{holder}")
        await page.locator("#room-waiting[data-waiting='2']").wait_for(timeout=WAIT_MS)
        after = await api(server, "GET", "/v1/waiting-room")
        assert after["waiting"] == 2, after
        lanes = {lane["siteId"]: lane["waiting"] for lane in after["lanes"]}
        for site_id, n in lanes.items():
            row = page.locator(f"#room-lanes tr[data-site-id='{site_id or ''}']")
            await row.and_(page.locator(f"[data-waiting='{n}']")).wait_for(timeout=WAIT_MS)

        # --- an overloaded instance (its event loop lagging): the panel says why it refuses starts
        async def lag() -> None:
            while True:
                time.sleep(0.9)  # blocks the event loop the server runs on
                await asyncio.sleep(0.15)

        lagging = asyncio.create_task(lag())
        try:
            busy = page.locator("#room-busy[data-busy^='event loop']")
            await busy.wait_for(timeout=30_000)
            assert "Yes: event loop lagging" in await busy.inner_text()
        finally:
            lagging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lagging
        await page.locator("#room-busy[data-busy='']").wait_for(timeout=WAIT_MS)
        assert not problems, problems

    for sid in waiting:
        status, _ = await server.admin("DELETE", f"/v1/sessions/{sid}")
        assert status == 200


# --------------------------------------------------------------------------- webhooks


@pytest.fixture
async def hooks_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """Webhooks may go to 127.0.0.1 (AVATAR_SERVER_ALLOW_PRIVATE_TARGETS); retries come quickly."""
    settings = make_settings(data_dir, redis_url, allow_private_targets=True, webhook_retry_seconds=0.4)
    h = await ServerHarness(settings, fast_engine_config()).start()
    try:
        yield h
        await assert_no_leaks(h, None, h.control)
    finally:
        await h.stop_all()


async def test_admin_console_shows_webhook_deliveries_and_redelivers(hooks_server: ServerHarness) -> None:
    """A site's Webhooks panel lists its deliveries (a 500 then a retry: delivered after 2 attempts),
    redelivers one (the receiver hears the same webhook-id again) and rotates the secret, which it
    shows once; the next delivery is signed with that secret."""
    server = hooks_server
    async with Receiver() as receiver:
        site = await api(server, "POST", "/v1/sites", {
            "name": "Hooked shop", "allowedOrigins": ["https://shop.example"], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 2, "webhookUrl": receiver.url("/fail-once")})
        did = await server.app[WEBHOOKS].emit(site["id"], "session.started", {"sessionId": "from-the-test"})
        assert did is not None
        async with chromium_page() as (page, problems):
            page.on("dialog", lambda dialog: dialog.accept())
            await page.goto(server.base + "/admin")
            await page.fill("#token", server.settings.admin_token)
            await page.click("#login-form button[type=submit]")
            await page.locator("#console").wait_for(state="visible", timeout=WAIT_MS)
            await page.click("#tab-btn-sites")
            site_row = page.locator(f"#sites-table tr[data-id='{site['id']}']")
            await site_row.wait_for(timeout=WAIT_MS)
            await site_row.locator("[data-action=webhooks]").click()
            await page.locator("#webhooks").wait_for(state="visible", timeout=WAIT_MS)
            assert await page.locator("#webhooks-url").inner_text() == receiver.url("/fail-once")
            assert await page.locator("#webhook-secret-box").is_hidden()  # shown only when made
            row = page.locator(f"#deliveries-table tr[data-id='{did}']")
            await page.locator(f"#deliveries-table tr[data-id='{did}'][data-status=delivered]").wait_for(
                timeout=WAIT_MS)  # refreshed by itself while open
            assert await row.get_attribute("data-attempts") == "2"
            assert "session.started" in await row.inner_text()
            await shot(page, "webhooks")

            await row.locator("[data-action=redeliver]").click()
            third = (await receiver.wait("/fail-once", 3))[2]
            assert third.headers["webhook-id"] == did
            await page.locator(f"#deliveries-table tr[data-id='{did}'][data-attempts='3']").wait_for(
                timeout=WAIT_MS)
            assert (await api(server, "GET", f"/v1/sites/{site['id']}/webhook-deliveries"))["data"][0]["attempts"] == 3

            await page.click("#webhook-rotate")
            await page.locator("#webhook-secret-box").wait_for(state="visible", timeout=WAIT_MS)
            secret = await page.locator("#webhook-secret").inner_text()
            assert secret.startswith("whsec_") and secret != site["webhookSecret"]
            again = await server.app[WEBHOOKS].emit(site["id"], "session.ended", {"sessionId": "from-the-test"})
            signed = [r for r in await receiver.wait("/fail-once", 5) if r.headers["webhook-id"] == again]
            assert verify(secret, signed[-1])["type"] == "session.ended"
            await page.click("#webhooks [data-cancel]")
            assert await page.locator("#webhooks").is_hidden()
            assert secret not in page.url
            assert not problems, problems
