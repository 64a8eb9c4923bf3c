"""Real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python) for the
browser tests and the first-frame benchmark.

``chromium()`` launches a persistent context in a fresh temporary profile (its TMPDIR inside
it too; both removed afterwards), with fake media devices granted without a prompt. A missing
Chromium is a failure, never a skip. ``EmbedPage`` serves a page from its own port: another
origin than the server's, as a customer's site would be.

aioice leaves 127.0.0.1 out of the engine's host candidates; the tests patch it to loopback
(``use_loopback_candidates``) and Chromium is told to gather loopback candidates too, so ICE
runs over 127.0.0.1 whatever the machine's network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from avatar_server.store.embedded import free_port

CHROMIUM = os.environ.get("AVATAR_SERVER_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
VIEWPORT = {"width": 1100, "height": 720}


def require_chromium() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium is required for the browser tests: {CHROMIUM} not found (apt-get install chromium)")
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A Playwright BrowserContext of Debian's Chromium, in a throw-away profile."""
    from playwright.async_api import async_playwright

    executable = require_chromium()
    tmp = Path(tempfile.mkdtemp(prefix="avatar-chromium-"))
    (tmp / "profile").mkdir()
    (tmp / "tmp").mkdir()
    # temporary files, config (crash reports) and caches all inside the throw-away folder
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "XDG_CONFIG_HOME": str(tmp / "tmp"),
           "XDG_CACHE_HOME": str(tmp / "tmp")}
    try:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                str(tmp / "profile"), executable_path=executable, headless=True, args=FLAGS, env=env,
                viewport=VIEWPORT, ignore_default_args=["--mute-audio"],
            )
            try:
                yield ctx
            finally:
                await ctx.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embed_html(server: str, attrs: dict[str, str]) -> str:
    """A customer's page: the widget loaded from the avatar server, nothing else."""
    attributes = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>shop</title>"
        f"<script type='module' src='{server}/widget.js'></script></head>"
        f"<body><h1>A customer's shop</h1><avatar-widget id='widget' {attributes}></avatar-widget></body></html>"
    )


class EmbedPage:
    """Serves one HTML page at ``/`` from its own port (another origin than the server)."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        app = web.Application()
        app.router.add_get("/", self._page)
        self.runner = web.AppRunner(app)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.html, content_type="text/html")

    async def __aenter__(self) -> EmbedPage:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


# Collects the widget's events on window.__events (installed before the page's scripts run).
RECORD_EVENTS = """
window.__events = [];
for (const type of ["avatar-status", "avatar-ended", "avatar-tool"]) {
  document.addEventListener(type, (ev) => window.__events.push({type, detail: ev.detail,
    composed: ev.composed, bubbles: ev.bubbles}));
}
"""

# 20 painted frames: their media times, the picture's size, a 64×64 sample's spread, audio tracks.
VIDEO_PROBE = """
async (selector) => {
  const v = document.querySelector(selector).shadowRoot.querySelector("video");
  const times = [];
  await new Promise((resolve) => {
    const cb = (now, meta) => { times.push(meta.mediaTime); if (times.length >= 20) resolve();
      else v.requestVideoFrameCallback(cb); };
    v.requestVideoFrameCallback(cb);
  });
  const c = document.createElement("canvas"); c.width = 64; c.height = 64;
  const g = c.getContext("2d"); g.drawImage(v, 0, 0, 64, 64);
  const px = g.getImageData(0, 0, 64, 64).data;
  const lumas = [];
  const colors = new Set();
  for (let i = 0; i < px.length; i += 4) {
    lumas.push(0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2]);
    colors.add((px[i] >> 3) << 10 | (px[i + 1] >> 3) << 5 | (px[i + 2] >> 3));
  }
  const mean = lumas.reduce((a, b) => a + b, 0) / lumas.length;
  const sd = Math.sqrt(lumas.reduce((a, b) => a + (b - mean) ** 2, 0) / lumas.length);
  const audio = v.srcObject ? v.srcObject.getAudioTracks() : [];
  return { frames: times.length, firstTime: times[0], lastTime: times[times.length - 1],
    width: v.videoWidth, height: v.videoHeight, lumaMean: mean, lumaSd: sd, colors: colors.size,
    audioTracks: audio.length, audioLive: audio.filter((t) => t.readyState === "live").length,
    paused: v.paused, currentTime: v.currentTime };
}
"""

# The loudest level (0..1) heard on the video element's audio within `ms` milliseconds.
AUDIO_PROBE = """
async ([selector, ms]) => {
  const v = document.querySelector(selector).shadowRoot.querySelector("video");
  const ctx = new AudioContext();
  await ctx.resume();
  const src = ctx.createMediaStreamSource(new MediaStream(v.srcObject.getAudioTracks()));
  const an = ctx.createAnalyser(); an.fftSize = 2048; src.connect(an);
  const buf = new Float32Array(an.fftSize);
  let peak = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    an.getFloatTimeDomainData(buf);
    for (const x of buf) peak = Math.max(peak, Math.abs(x));
    await new Promise((r) => setTimeout(r, 50));
  }
  await ctx.close();
  return peak;
}
"""
