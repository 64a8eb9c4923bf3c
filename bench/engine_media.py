"""CPU cost of the local engine's media peer per stream (25 fps, 512×512 VP8 + Opus).

Runs the engine's ``POST /v1/rtc/{id}`` endpoint (a ``MediaManager``) in a
child process and N aiortc visitors in this one, all over loopback. Once every
visitor receives video, each sends one question (so the avatar speaks and its
mouth moves), and the engine process's CPU time (user + system, including its
espeak-ng children) is sampled from /proc over the window.

    python bench/engine_media.py                 # 1 and 4 streams, 10 s each
    python bench/engine_media.py --streams 1 4 8 --seconds 15

Linux only (/proc). The visitors' decoding runs in this process, not in the
measured one, but on the same cores: on a small machine the figures for many
streams are an upper bound of what the engine would use alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKEN = "bench-token"
DOCS = [("faq", "Refunds are paid to the original card within 30 days of the return arriving.")]


def _use_loopback() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


# ---------------------------------------------------------------- engine side (child process)


def serve(port: int) -> None:
    from aiohttp import web

    from avatar_server.engine.http.rtc import add_rtc_routes
    from avatar_server.engine.media import MediaManager, StaticKnowledge

    _use_loopback()

    class Session:
        def __init__(self, sid: str) -> None:
            self.rtc_token = TOKEN
            self.avatar = {"type": "runway-preset", "presetId": sid}
            self.personality = "cheerful"
            self.start_script = "Hello, I am the benchmark avatar. Ask me about refunds."

    key = web.AppKey("media", MediaManager)
    app = web.Application()
    app[key] = MediaManager(knowledge=StaticKnowledge(documents=DOCS))

    async def cleanup(app: web.Application) -> None:
        await app[key].close()

    app.on_cleanup.append(cleanup)
    add_rtc_routes(
        app,
        manager_key=key,
        get_session=Session,
        on_connected=lambda sid: None,
        on_closed=lambda sid, reason: None,
    )
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ---------------------------------------------------------------- visitor side


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


async def run(port: int, pid: int, streams: int, seconds: float) -> dict[str, float]:
    import aiohttp

    from tests.e2e.rtc_helpers import RtcClient

    _use_loopback()
    clients = [RtcClient() for _ in range(streams)]
    try:
        async with aiohttp.ClientSession() as http:
            for i, client in enumerate(clients):
                offer = await client.offer()
                url = f"http://127.0.0.1:{port}/v1/rtc/bench-{streams}-{i}-{time.monotonic_ns()}"
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with http.post(url, json=offer, headers=headers) as r:
                    r.raise_for_status()
                    await client.accept(await r.json())
        for client in clients:
            await client.wait_for(lambda c=client: len(c.video) >= 10, timeout=30)
        for client in clients:
            await client.wait_open()
            client.send({"type": "user_message", "text": "How do refunds work?"})
        await asyncio.sleep(2.0)  # warm-up: encoders settle, speech synthesised
        frames_before = [c.video_frames_received for c in clients]
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = _cpu_seconds(pid), time.monotonic()
        frames = [c.video_frames_received - f for c, f in zip(clients, frames_before, strict=True)]
        heard = sum(1 for c in clients if any(level > 0.02 for level in c.audio_levels))
        cpu_pct = 100.0 * (cpu1 - cpu0) / (t1 - t0)
        return {
            "streams": streams,
            "engine_cpu_percent": round(cpu_pct, 1),
            "cpu_percent_per_stream": round(cpu_pct / streams, 1),
            "received_fps_min": round(min(frames) / (t1 - t0), 1),
            "received_fps_mean": round(sum(frames) / len(frames) / (t1 - t0), 1),
            "streams_with_speech": heard,
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = _free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        idle0, t0 = _cpu_seconds(child.pid), time.monotonic()
        time.sleep(2.0)
        idle = 100.0 * (_cpu_seconds(child.pid) - idle0) / (time.monotonic() - t0)
        print(json.dumps({"streams": 0, "engine_cpu_percent": round(idle, 1)}))
        for n in args.streams:
            result = asyncio.run(run(port, child.pid, n, args.seconds))
            print(json.dumps(result), flush=True)
            time.sleep(1.0)
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()
