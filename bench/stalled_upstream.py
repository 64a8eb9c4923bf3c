"""Cap lateness with every upstream status read stalled, beside the same run with a healthy upstream.

Runs, all on 127.0.0.1 and bounded in count and time, twice (each run with fresh processes):
  * the local engine alone (``avatar-server engine``) standing in for Runway, only the server's
    cap stopping its sessions (``honourMaxDuration`` off),
  * avatar_server in Runway mode pointed at it (its own process), its ``check`` timer every 2 s,
  * N sessions started through ``POST /v1/sessions/connect`` (answered once the credentials are
    ready), ``maxDuration`` spread over 15–20 s, plus a few longer ones a client DELETEs mid-run,
  * stalled run only: once every session is RUNNING, every status read (``GET``) stalls 20 s
    (engine fault injection); creates, consumes and cancels stay healthy.

Cap lateness is read from the records, not from this script's clock: the server's
``endedAt`` − ``endsAt`` (the cap fired) and the engine's ``endedAt`` − ``endsAt`` (the
upstream session was cancelled). The DELETE figure is the time the client waited for its
answer, which comes once the upstream cancel is done.

    python bench/stalled_upstream.py [--sessions 100] [--deletes 10] [--stall 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from measure import ROOT, VERSION, engine_control, pct, ts, wait_http  # noqa: F401

from avatar_server.store.embedded import EmbeddedRedis, free_port  # noqa: E402

MIN_DURATION, MAX_DURATION = 15, 20


async def one_run(args: argparse.Namespace, stalled: bool, seed: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="avatar-bench-stall-"))
    redis = EmbeddedRedis(tmp / "redis", persist=False)
    redis_url = await redis.start()
    key = "sk_bench_" + secrets.token_hex(16)
    admin = "adm_bench_" + secrets.token_hex(16)
    eport, sport = free_port(), free_port()
    engine_base, server_base = f"http://127.0.0.1:{eport}", f"http://127.0.0.1:{sport}"
    env = {**os.environ, "AVATAR_ENGINE_PROVISION_DELAY": "fixed:0.5", "AVATAR_SERVER_LOG_LEVEL": "WARNING"}
    engine = subprocess.Popen([sys.executable, "-m", "avatar_server", "engine", "--port", str(eport),
                               "--api-key", key], env=env, stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "avatar_server"], env={
        **env, "RUNWAYML_API_SECRET": key, "RUNWAYML_BASE_URL": engine_base, "REDIS_URL": redis_url,
        "AVATAR_SERVER_PORT": str(sport), "AVATAR_SERVER_ADMIN_TOKEN": admin,
        "AVATAR_SERVER_DATA_DIR": str(tmp / "data"), "AVATAR_SERVER_UPSTREAM_CHECK_SECONDS": "2",
        "AVATAR_SERVER_UPSTREAM_MAX_RPS": "1000"}, stdout=subprocess.DEVNULL)
    rng = random.Random(seed)
    try:
        await wait_http(engine_base + "/v1/realtime_sessions/x")
        await wait_http(server_base + "/healthz")
        await engine_control(engine_base, key, "PATCH", "/config", {"honourMaxDuration": False})
        async with httpx.AsyncClient(base_url=server_base, headers={"Authorization": f"Bearer {admin}"},
                                     timeout=120, limits=httpx.Limits(max_connections=100)) as c:
            sem = asyncio.Semaphore(50)

            async def connect(max_duration: int) -> dict:
                async with sem:
                    r = await c.post("/v1/sessions/connect", json={"avatarId": "influencer",
                                                                   "maxDuration": max_duration})
                    r.raise_for_status()
                    return r.json()

            capped = await asyncio.gather(*(connect(rng.randint(MIN_DURATION, MAX_DURATION))
                                            for _ in range(args.sessions)))
            deleted = await asyncio.gather(*(connect(120) for _ in range(args.deletes)))
            if stalled:
                await engine_control(engine_base, key, "POST", "/faults", {"rules": [
                    {"op": "get", "delaySeconds": args.stall, "times": 1_000_000}]})
            await asyncio.sleep(8)  # status checks (every 2 s) are in flight, some sessions near their cap

            async def delete(body: dict) -> float:
                t0 = time.monotonic()
                r = await c.delete(f"/v1/sessions/{body['sessionId']}")
                took = time.monotonic() - t0
                r.raise_for_status()
                return took

            delete_times = list(await asyncio.gather(*(delete(b) for b in deleted)))
            last_end = max(ts(b["endsAt"]) for b in capped)
            await asyncio.sleep(max(0.0, last_end - time.time()) + 2.0)

            recs = [(await c.get(f"/v1/sessions/{b['sessionId']}")).json() for b in capped]
        engine_sessions = {s["id"]: s for s in await engine_control(engine_base, key, "GET", "/sessions")}
        stats = await engine_control(engine_base, key, "GET", "/stats")
        fired, cancelled, reasons = [], [], {}
        for rec in recs:
            reasons[rec["endReason"]] = reasons.get(rec["endReason"], 0) + 1
            if rec["endedAt"]:
                fired.append(ts(rec["endedAt"]) - ts(rec["endsAt"]))
            up = engine_sessions.get(rec["upstreamId"] or "")
            if up and up["status"] == "CANCELLED" and up["endedAt"]:
                cancelled.append(ts(up["endedAt"]) - ts(rec["endsAt"]))
        return {"fired": fired, "cancelled": cancelled, "reasons": reasons, "deletes": delete_times,
                "stalled_reads": stats["faultsInjected"]["get"], "reads": stats["requests"]["get"]}
    finally:
        for p in (server, engine):
            p.send_signal(signal.SIGTERM)
        for p in (server, engine):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        await redis.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=100, help="capped sessions (maxDuration 15-20 s)")
    ap.add_argument("--deletes", type=int, default=10, help="further sessions a client DELETEs mid-run")
    ap.add_argument("--stall", type=float, default=20.0, help="seconds each status read stalls")
    args = ap.parse_args()
    t0 = time.time()
    healthy = await one_run(args, stalled=False, seed=1)
    stalled = await one_run(args, stalled=True, seed=1)

    def ms(values: list[float], q: float | None = None) -> str:
        if not values:
            return "-"
        return f"{(max(values) if q is None else pct(values, q)) * 1000:.0f}"

    rows = [
        ("sessions ended by the cap", f"{healthy['reasons'].get('cap', 0)}/{args.sessions}",
         f"{stalled['reasons'].get('cap', 0)}/{args.sessions}"),
        ("cap fired: endedAt - endsAt p50 (ms)", ms(healthy["fired"], .5), ms(stalled["fired"], .5)),
        ("  p99 (ms)", ms(healthy["fired"], .99), ms(stalled["fired"], .99)),
        ("  max (ms)", ms(healthy["fired"]), ms(stalled["fired"])),
        ("upstream cancelled - endsAt p50 (ms)", ms(healthy["cancelled"], .5), ms(stalled["cancelled"], .5)),
        ("  p99 (ms)", ms(healthy["cancelled"], .99), ms(stalled["cancelled"], .99)),
        ("  max (ms)", ms(healthy["cancelled"]), ms(stalled["cancelled"])),
        (f"client DELETE answered, p50 of {args.deletes} (ms)", ms(healthy["deletes"], .5),
         ms(stalled["deletes"], .5)),
        ("  max (ms)", ms(healthy["deletes"]), ms(stalled["deletes"])),
        ("status reads sent / of them stalled", f"{healthy['reads']}/{healthy['stalled_reads']}",
         f"{stalled['reads']}/{stalled['stalled_reads']}"),
    ]
    print(f"stalled upstream: {args.sessions} capped sessions (maxDuration {MIN_DURATION}-{MAX_DURATION} s) "
          f"+ {args.deletes} deleted by a client, check every 2 s, status reads stalled {args.stall:g} s")
    w = max(len(r[0]) for r in rows)
    print(f"{'':<{w}}  {'healthy upstream':>16}  {'status reads stalled':>20}")
    for name, a, b in rows:
        print(f"{name:<{w}}  {a:>16}  {b:>20}")
    others = {k: v for k, v in stalled["reasons"].items() if k != "cap"}
    if others:
        print(f"stalled run, other ends: {others}")
    print(f"wall seconds: {time.time() - t0:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
