"""The browser side in real Chromium: time to the first painted frame, and engine CPU per stream.

Runs avatar_server (engine mode, demo on, its own process so its CPU is its own) and Debian's
headless Chromium (Playwright), all on 127.0.0.1:

  * first frame — ``start()`` on /demo until the widget's first painted frame
    (requestVideoFrameCallback), median of N runs, split into "credentials in hand" (session
    created, provisioned, handed over on the signal socket) and the media part (offer/answer,
    ICE+DTLS, first decoded frame on screen);
  * the reference — the same session taken the shortest way without the widget:
    ``POST /v1/sessions/connect`` (held until the credentials are ready), then a bare
    RTCPeerConnection offer/answer, until its first painted frame;
  * streams — 1, 4 and 8 widgets playing at once on one /demo page (background tabs are
    not painted, so one page holds them all), each avatar answering one typed question; the server process's CPU (user+system, espeak-ng children included) over the
    window, and the frames each tab painted per second.

    python bench/browser_first_frame.py                    # 10 runs, streams 1 4 8, 10 s windows
    python bench/browser_first_frame.py --runs 5 --streams 1 4 --seconds 8

The engine's provisioning delay is set small (``--provision-delay``, default fixed:0.3) so the
figures show this server and the browser, not the simulated Runway queue. Chromium decodes on
the same cores as the engine encodes: on a small machine the many-stream figures are an upper
bound. Linux only (/proc); reuses ``bench/engine_media.py``'s CPU sampling and loopback ICE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_media import _cpu_seconds, _free_port, _use_loopback  # noqa: E402

ADMIN = "adm_bench_" + "b" * 24
WIDGET = "avatar-widget"

# the widget: start() → first painted frame, with the moment the credentials arrived
WIDGET_RUN = """
async () => {
  const w = document.querySelector("avatar-widget");
  let creds = null;
  const t0 = performance.now();
  w.addEventListener("avatar-status", (e) => { if (e.detail.status === "connecting" && creds === null)
    creds = performance.now() - t0; });
  await w.start();
  return { total: performance.now() - t0, credentials: creds };
}
"""

# the reference: /connect, then a bare RTCPeerConnection, until the first painted frame
REFERENCE_RUN = """
async ([key, avatar]) => {
  const t0 = performance.now();
  const r = await fetch("/v1/sessions/connect", { method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ avatarId: avatar }) });
  const c = await r.json();
  if (!r.ok) throw new Error(JSON.stringify(c));
  const creds = performance.now() - t0;
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.createDataChannel("events");
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const v = document.createElement("video");
  v.muted = true; v.playsInline = true; document.body.append(v);
  const frame = new Promise((resolve) => v.requestVideoFrameCallback(resolve));
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); v.srcObject = stream; v.play().catch(() => {}); };
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") await new Promise((res) => pc.addEventListener(
    "icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") res(); }));
  const a = await fetch(c.serverUrl, { method: "POST", headers: { Authorization: `Bearer ${c.token}`,
    "Content-Type": "application/json" }, body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }) });
  await pc.setRemoteDescription(await a.json());
  await frame;
  const total = performance.now() - t0;
  await fetch(`/v1/sessions/${c.sessionId}`, { method: "DELETE", headers: { Authorization: `Bearer ${c.clientToken}` } });
  pc.close(); v.remove();
  return { total, credentials: creds };
}
"""

# N widgets on the page (the demo's own plus N-1 copies), small enough to all be on screen
ADD_WIDGETS = """
(n) => {
  const first = document.querySelector("avatar-widget");
  for (let i = 1; i < n; i++) {
    const w = document.createElement("avatar-widget");
    for (const a of ["key", "avatar"]) w.setAttribute(a, first.getAttribute(a));
    first.after(w);
  }
  const all = [...document.querySelectorAll("avatar-widget")];
  all.forEach((w, i) => { w.style.cssText = "position:fixed;width:260px;flex:none;z-index:9;" +
    `left:${(i % 4) * 265}px;top:${Math.floor(i / 4) * 330}px`; w.dataset.i = String(i); });
  return all.length;
}
"""

# frames painted and video bytes received over `ms` (the widget's peer connection, for the bench only)
COUNT_FRAMES = """
async ([i, ms]) => {
  const w = document.querySelector(`avatar-widget[data-i="${i}"]`);
  const v = w.shadowRoot.querySelector("video");
  const bytes = async () => { let b = 0; (await w._call.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") b += r.bytesReceived; }); return b; };
  let n = 0; let on = true;
  const cb = () => { n++; if (on) v.requestVideoFrameCallback(cb); };
  v.requestVideoFrameCallback(cb);
  const b0 = await bytes();
  await new Promise((r) => setTimeout(r, ms));
  on = false;
  return { frames: n, kbps: (await bytes() - b0) * 8 / ms };
}
"""


# ---------------------------------------------------------------- server side (child process)


def serve(port: int, data_dir: str, delay: str) -> None:
    os.environ["AVATAR_ENGINE_PROVISION_DELAY"] = delay
    from aiohttp import web

    from avatar_server.app import create_app
    from avatar_server.settings import Settings

    _use_loopback()  # the engine offers 127.0.0.1 (Chromium gathers loopback too): any machine
    settings = Settings.from_env({
        "AVATAR_SERVER_PORT": str(port), "AVATAR_SERVER_DATA_DIR": data_dir, "AVATAR_SERVER_ADMIN_TOKEN": ADMIN,
        "AVATAR_SERVER_DEMO": "on", "AVATAR_SERVER_START_RATE_PER_MINUTE": "0", "AVATAR_SERVER_LOG_LEVEL": "WARNING",
    })
    web.run_app(create_app(settings), host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------- browser side


async def _demo_page(ctx, base: str):  # noqa: ANN001, ANN202
    page = await ctx.new_page()
    await page.goto(base + "/demo")
    await page.wait_for_function(f"() => document.querySelector('{WIDGET}').getAttribute('key')")
    return page


async def first_frames(ctx, base: str, runs: int) -> dict[str, dict[str, float]]:  # noqa: ANN001
    import httpx

    key = httpx.get(base + "/demo/config.json").json()["publishableKey"]
    widget, reference = [], []
    page = await _demo_page(ctx, base)
    for _ in range(runs):
        widget.append(await page.evaluate(WIDGET_RUN))
        await page.evaluate(f"document.querySelector('{WIDGET}').end()")
        reference.append(await page.evaluate(REFERENCE_RUN, [key, "cooking-teacher"]))
        await asyncio.sleep(0.3)
    await page.close()

    def summary(rows: list[dict[str, float]]) -> dict[str, float]:
        return {
            "median_ms": round(statistics.median(r["total"] for r in rows)),
            "median_credentials_ms": round(statistics.median(r["credentials"] for r in rows)),
            "median_media_ms": round(statistics.median(r["total"] - r["credentials"] for r in rows)),
            "min_ms": round(min(r["total"] for r in rows)),
            "max_ms": round(max(r["total"] for r in rows)),
        }

    return {"widget": summary(widget), "reference": summary(reference)}


async def streams(ctx, base: str, pid: int, n: int, seconds: float) -> dict[str, float]:  # noqa: ANN001
    page = await _demo_page(ctx, base)
    await page.set_viewport_size({"width": 1080, "height": 680})
    assert await page.evaluate(ADD_WIDGETS, n) == n
    one = f"{WIDGET}[data-i='{{}}']"
    try:
        await asyncio.gather(*(page.evaluate(f"document.querySelector(\"{one.format(i)}\").start()")
                               for i in range(n)))
        for i in range(n):  # each avatar answers one question, so it speaks and its mouth moves
            box = page.locator(f"{one.format(i)} input[name=text]")
            await box.fill("Hello, what can you tell me?")
            await box.press("Enter")
        await asyncio.sleep(2.0)
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        counts = await asyncio.gather(*(page.evaluate(COUNT_FRAMES, [i, int(seconds * 1000)]) for i in range(n)))
        cpu1, t1 = _cpu_seconds(pid), time.monotonic()
        cpu = 100.0 * (cpu1 - cpu0) / (t1 - t0)
        frames = [c["frames"] for c in counts]
        return {
            "streams": n,
            "server_cpu_percent": round(cpu, 1),
            "cpu_percent_per_stream": round(cpu / n, 1),
            "painted_fps_min": round(min(frames) / (t1 - t0), 1),
            "painted_fps_mean": round(sum(frames) / len(frames) / (t1 - t0), 1),
            "video_kbps_mean": round(sum(c["kbps"] for c in counts) / n),
        }
    finally:
        await page.evaluate("Promise.all([...document.querySelectorAll('avatar-widget')].map((w) => w.end()))")
        await page.close()


async def bench(base: str, pid: int, args: argparse.Namespace) -> None:
    import httpx

    from tests.e2e.browser_helpers import chromium

    # enough concurrent sessions on the demo site for the largest stream count
    sites = httpx.get(base + "/v1/sites", headers={"Authorization": f"Bearer {ADMIN}"}).json()["data"]
    httpx.patch(f"{base}/v1/sites/{sites[0]['id']}", headers={"Authorization": f"Bearer {ADMIN}"},
                json={"maxConcurrentSessions": max(args.streams) + 2}).raise_for_status()
    async with chromium() as ctx:
        print(json.dumps({"first_frame": await first_frames(ctx, base, args.runs), "runs": args.runs}), flush=True)
        for n in args.streams:
            print(json.dumps(await streams(ctx, base, pid, n, args.seconds)), flush=True)
            await asyncio.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--provision-delay", default="fixed:0.3")
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return
    port = _free_port()
    data = tempfile.mkdtemp(prefix="avatar-bench-")
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port), data, args.provision_delay])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        time.sleep(1.0)
        asyncio.run(bench(base, child.pid, args))
    finally:
        child.terminate()
        child.wait(timeout=15)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
