"""Session setup benchmark: avatar_server vs. Runway's reference loop, side by side.

Runs, all on 127.0.0.1 and bounded in count and time:
  * the local engine alone (``avatar-server engine``) with a realistic provisioning delay,
  * avatar_server in Runway mode pointed at it (its own process, so its CPU and memory are its own),
  * N sessions through ``POST /v1/sessions/connect`` (C at a time),
  * the same N sessions through a reference loop in its own process doing what Runway's
    example server does: create, poll every 1 s, consume.

For each session the overhead is: credentials in the caller's hands − the engine's READY moment
(both on this machine's clock). Prints p50/p95/p99 overhead, upstream requests per session,
CPU seconds and peak RSS of the process doing the work.

    python bench/session_setup.py [--sessions 200] [--concurrency 50] [--delay lognormal:2.5,0.35]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from measure import (  # noqa: F401  (importing measure puts the project on sys.path)
    ROOT,
    VERSION,
    engine_control,
    pct,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    wait_http,
)

from avatar_server.store.embedded import EmbeddedRedis, free_port  # noqa: E402


async def reference_worker(base: str, key: str, n: int, concurrency: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    done: dict[str, float] = {}
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}", **VERSION},
                                 limits=limits, timeout=30) as c:
        async def one() -> None:
            async with sem:
                r = await c.post("/v1/realtime_sessions", json={
                    "model": "gwm1_avatars", "avatar": {"type": "runway-preset", "presetId": "influencer"}})
                sid = r.json()["id"]
                for _ in range(60):  # like the reference server: every 1 s for up to 60 s
                    await asyncio.sleep(1.0)
                    s = (await c.get(f"/v1/realtime_sessions/{sid}")).json()
                    if s["status"] == "READY":
                        break
                else:
                    return
                await c.post(f"/v1/realtime_sessions/{sid}/consume",
                             headers={"Authorization": f"Bearer {s['sessionKey']}"})
                done[sid] = time.time()
                await c.delete(f"/v1/realtime_sessions/{sid}")

        await asyncio.gather(*(one() for _ in range(n)))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"delivered": done, "cpu": ru.ru_utime + ru.ru_stime, "peak_mb": ru.ru_maxrss / 1024}


# --- the server run ---------------------------------------------------------------------------
async def server_phase(base: str, admin: str, n: int, concurrency: int) -> dict[str, tuple[str, float]]:
    sem = asyncio.Semaphore(concurrency)
    got: dict[str, tuple[str, float]] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as c:
        async def one() -> None:
            async with sem:
                r = await c.post("/v1/sessions/connect", json={"avatarId": "influencer"})
                t = time.time()
                r.raise_for_status()
                body = r.json()
                rec = (await c.get(f"/v1/sessions/{body['sessionId']}")).json()
                got[body["sessionId"]] = (rec["upstreamId"], t)
                await c.delete(f"/v1/sessions/{body['sessionId']}")

        await asyncio.gather(*(one() for _ in range(n)))
    return got


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--delay", default="lognormal:2.5,0.35", help="engine provisioning delay distribution")
    ap.add_argument("--warmup", type=int, default=20, help="sessions run first so the server learns timings")
    ap.add_argument("--reference-worker", nargs=4, metavar=("BASE", "KEY", "N", "C"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_worker:
        b, k, n, c = args.reference_worker
        print(json.dumps(await reference_worker(b, k, int(n), int(c))))
        return

    tmp = Path(tempfile.mkdtemp(prefix="avatar-bench-"))
    redis = EmbeddedRedis(tmp / "redis", persist=False)
    redis_url = await redis.start()
    key = "sk_bench_" + secrets.token_hex(16)
    admin = "adm_bench_" + secrets.token_hex(16)
    eport, sport = free_port(), free_port()
    engine_base, server_base = f"http://127.0.0.1:{eport}", f"http://127.0.0.1:{sport}"
    env = {**os.environ, "AVATAR_ENGINE_PROVISION_DELAY": args.delay, "AVATAR_SERVER_LOG_LEVEL": "WARNING"}
    engine = subprocess.Popen([sys.executable, "-m", "avatar_server", "engine", "--port", str(eport),
                               "--api-key", key], env=env, stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "avatar_server"], env={
        **env, "RUNWAYML_API_SECRET": key, "RUNWAYML_BASE_URL": engine_base, "REDIS_URL": redis_url,
        "AVATAR_SERVER_PORT": str(sport), "AVATAR_SERVER_ADMIN_TOKEN": admin,
        "AVATAR_SERVER_DATA_DIR": str(tmp / "data")}, stdout=subprocess.DEVNULL)
    try:
        await wait_http(engine_base + "/v1/realtime_sessions/x")
        await wait_http(server_base + "/healthz")
        if args.warmup:
            await server_phase(server_base, admin, args.warmup, min(args.warmup, args.concurrency))
        await engine_control(engine_base, key, "DELETE", "/stats")
        cpu0 = proc_cpu_seconds(server.pid)
        t0 = time.time()
        got = await server_phase(server_base, admin, args.sessions, args.concurrency)
        wall_server = time.time() - t0
        cpu_server = proc_cpu_seconds(server.pid) - cpu0
        peak_server = proc_peak_rss_mb(server.pid)
        stats_server = await engine_control(engine_base, key, "GET", "/stats")
        ready = {s["id"]: s["readyAt"] for s in await engine_control(engine_base, key, "GET", "/sessions")}
        ours = [t - ready[u] for u, t in got.values() if ready.get(u)]

        await engine_control(engine_base, key, "DELETE", "/stats")
        t0 = time.time()
        out = subprocess.run([sys.executable, __file__, "--reference-worker", engine_base, key,
                              str(args.sessions), str(args.concurrency)], capture_output=True, text=True,
                             timeout=600, check=True)
        wall_ref = time.time() - t0
        ref = json.loads(out.stdout)
        stats_ref = await engine_control(engine_base, key, "GET", "/stats")
        ready = {s["id"]: s["readyAt"] for s in await engine_control(engine_base, key, "GET", "/sessions")}
        theirs = [t - ready[u] for u, t in ref["delivered"].items() if ready.get(u)]

        def per_session(stats: object, n: int) -> float:
            req = stats["requests"]  # type: ignore[index]
            return sum(req.get(k, 0) for k in ("create", "get", "consume", "delete")) / max(1, n)

        def polls(stats: object, n: int) -> float:
            return stats["requests"].get("get", 0) / max(1, n)  # type: ignore[index]

        rows = [
            ("sessions delivered", f"{len(ours)}", f"{len(theirs)}"),
            ("overhead READY→credentials p50 (ms)", f"{pct(ours, .5) * 1000:.0f}", f"{pct(theirs, .5) * 1000:.0f}"),
            ("overhead p95 (ms)", f"{pct(ours, .95) * 1000:.0f}", f"{pct(theirs, .95) * 1000:.0f}"),
            ("overhead p99 (ms)", f"{pct(ours, .99) * 1000:.0f}", f"{pct(theirs, .99) * 1000:.0f}"),
            ("upstream requests / session", f"{per_session(stats_server, len(ours)):.1f}",
             f"{per_session(stats_ref, len(theirs)):.1f}"),
            ("  of which status polls", f"{polls(stats_server, len(ours)):.1f}", f"{polls(stats_ref, len(theirs)):.1f}"),
            ("CPU seconds (worker process)", f"{cpu_server:.2f}", f"{ref['cpu']:.2f}"),
            ("peak RSS MB (worker process)", f"{peak_server:.0f}", f"{ref['peak_mb']:.0f}"),
            ("wall seconds", f"{wall_server:.1f}", f"{wall_ref:.1f}"),
        ]
        print(f"session setup: {args.sessions} sessions, {args.concurrency} at a time, "
              f"engine delay {args.delay}, warm-up {args.warmup}")
        w = max(len(r[0]) for r in rows)
        print(f"{'':<{w}}  {'avatar_server':>14}  {'reference 1 s loop':>18}")
        for name, a, b in rows:
            print(f"{name:<{w}}  {a:>14}  {b:>18}")
        ratio = pct(ours, .5) / pct(theirs, .5) if theirs else float("nan")
        print(f"p50 overhead ratio (ours / reference): {ratio:.2f} (target <= 0.20)")
    finally:
        for p in (server, engine):
            p.send_signal(signal.SIGTERM)
        for p in (server, engine):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        await redis.close()


if __name__ == "__main__":
    asyncio.run(main())
