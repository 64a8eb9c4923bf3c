"""Live sessions (issue 9): 1,000 sessions live at once on one instance, beside a reference of 200.

Two runs, each with fresh processes, all on 127.0.0.1 (``procstack.Stack``): the reference
(200 sessions) first, then 1,000.
  * the local engine alone standing in for Runway: no concurrency limit, provisioning
    lognormal 2.5 s median (σ 0.35, as ``session_setup.py``), ``honourMaxDuration`` off and a
    long connect grace, so the server's cap is what ends every session,
  * avatar_server in Runway mode pointed at it, its own Redis; the request budget raised to
    500/s (AVATAR_SERVER_UPSTREAM_MAX_RPS) so the ramp is not budget-bound; the waiting room at
    its defaults (limit 0: unknown, never learned here since the engine never queues);
  * this process: 20 warm-up sessions (``/connect`` then DELETE, so the server has learned
    provisioning times and loaded its code), then N sessions started at once through
    ``POST /v1/sessions`` (admin token, 100 starts in flight at most), each with its signal
    socket open from its 201 until the ``ended`` frame (maxDuration 60 s).

Figures, from the server's records (``GET /v1/sessions/{id}``) and /proc:
  * cap lateness: ``endedAt − endsAt`` (the server's cap fired), and the engine's
    ``endedAt − endsAt`` (the upstream session was cancelled);
  * the most sessions RUNNING at once (from the records' startedAt/endedAt);
  * RSS per session: (the server's peak RSS − its RSS just before the first start) / N;
  * CPU per session: the server's CPU seconds from the first start to the last end / N
    (provisioning polls, delivery, timers, sockets, the cap and the cancel included);
  * errors: ends other than ``cap``, 5xx answers, visitor exceptions, server log lines at
    WARNING or above; leaks: engine sessions not terminal and server sessions not ENDED at the end.

    python bench/live_sessions.py [--sessions 1000] [--reference 200] [--max-duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import procstack
from measure import engine_control, pct, proc_cpu_seconds, proc_peak_rss_mb, proc_rss_mb, ts
from procstack import Stack

DELAY = "lognormal:2.5,0.35"
MAX_RPS = 500
STARTS_IN_FLIGHT = 100
BUSY_RETRIES = 10  # a start refused 503 server_busy is tried again after its Retry-After, this many times
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


async def warm_up(base: str, admin: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as c:
        async def one() -> None:
            r = await c.post("/v1/sessions/connect", json={"avatarId": "cooking-teacher", "maxDuration": 10})
            r.raise_for_status()
            await c.delete(f"/v1/sessions/{r.json()['sessionId']}")
        await asyncio.gather(*(one() for _ in range(n)))


async def session(http: aiohttp.ClientSession, base: str, admin: str, sem: asyncio.Semaphore,
                  max_duration: int, live: list[int]) -> dict[str, Any]:
    v: dict[str, Any] = {"t0": time.time(), "busy": 0}
    try:
        while True:
            async with sem:
                async with http.post(base + "/v1/sessions", headers={"Authorization": f"Bearer {admin}"},
                                     json={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"},
                                           "maxDuration": max_duration}) as r:
                    v["status"] = r.status
                    body = await r.json(content_type=None)
                    retry_after = float(r.headers.get("Retry-After") or 2)
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if r.status == 503 and code == "server_busy" and v["busy"] < BUSY_RETRIES:
                # as the widget's visitor would: try again after Retry-After (counted as an error all the same)
                v["busy"] += 1
                v["busy_msg"] = re.sub(r"[0-9]+\.[0-9]+ s", "N s", body["error"].get("message", ""))
                await asyncio.sleep(min(retry_after, 10))
                continue
            break
        if r.status != 201:
            v["refused"] = f"{r.status} {body.get('error', {}).get('code') if isinstance(body, dict) else ''}"
            return v
        v["id"] = body["id"]
        async with http.ws_connect(f"{base}/v1/sessions/{body['id']}/signal",
                                   params={"token": body["clientToken"]}) as ws:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                f = json.loads(msg.data)
                if f["type"] == "credentials":
                    v["t_cred"] = time.time()
                    live[0] += 1
                    live[1] = max(live[1], live[0])
                elif f["type"] == "ended":
                    v["end"] = f["reason"]
                    break
            if "t_cred" in v:
                live[0] -= 1
            if "end" not in v:
                v["end"] = "socket closed, no ended frame"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 — counted and shown
        v["error"] = f"{type(exc).__name__}: {exc}"[:160]
    return v


async def one_run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(prefix=f"avatar-bench-live-{n}-",
                  engine_env={"AVATAR_ENGINE_PROVISION_DELAY": DELAY, "AVATAR_ENGINE_CONNECT_GRACE": "900"},
                  server_env={"AVATAR_SERVER_START_RATE_PER_MINUTE": "0", "AVATAR_SERVER_UPSTREAM_MAX_RPS": str(MAX_RPS)},
                  logs_dir=args.logs_dir, log_name=f"live-{n}")
    try:
        await stack.start()
        base, pid = stack.server_base, stack.server.pid  # type: ignore[union-attr]
        await engine_control(stack.engine_base, stack.key, "PATCH", "/config",
                             {"honourMaxDuration": False, "connectGrace": 900})
        await warm_up(base, stack.admin, args.warmup)
        await asyncio.sleep(2)
        idle0 = proc_cpu_seconds(pid)
        await asyncio.sleep(5)
        idle_rate = (proc_cpu_seconds(pid) - idle0) / 5  # the server's CPU with nothing to do (timer loop etc.)
        await engine_control(stack.engine_base, stack.key, "DELETE", "/stats")
        pids = {"server": pid, "engine": stack.engine.pid, "redis": stack.redis_pid}  # type: ignore[union-attr]
        cpu0 = {k: proc_cpu_seconds(p) for k, p in pids.items() if p}
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        rss0 = proc_rss_mb(pid)
        samples: list[float] = []
        cpu_samples: list[tuple[float, float]] = []  # (time, server CPU seconds)

        async def sample() -> None:
            while True:
                samples.append(proc_rss_mb(pid))
                cpu_samples.append((time.time(), proc_cpu_seconds(pid)))
                await asyncio.sleep(0.5)

        busy: Counter[str] = Counter()

        async def busy_sampler() -> None:  # why the instance refuses starts, once a second
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {stack.admin}"},
                                         timeout=10) as c:
                while True:
                    with contextlib.suppress(Exception):
                        reason = (await c.get("/v1/waiting-room")).json().get("busy")
                        busy[re.sub(r"[0-9.]+ s", "N s", reason) if reason else "not busy"] += 1
                    await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        busy_task = asyncio.create_task(busy_sampler())
        live = [0, 0]  # (live now, most at once) as the visitors saw it
        sem = asyncio.Semaphore(STARTS_IN_FLIGHT)
        t0 = time.time()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as http:
            tasks = [asyncio.create_task(session(http, base, stack.admin, sem, args.max_duration, live))
                     for _ in range(n)]
            _, pending = await asyncio.wait(tasks, timeout=args.max_duration + 180)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        wall = time.time() - t0
        cpu = {k: proc_cpu_seconds(p) - cpu0[k] for k, p in pids.items() if p}
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu["loadgen"] = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        sampler.cancel()
        busy_task.cancel()
        peak = max([*samples, proc_peak_rss_mb(pid)])
        rss_end = proc_rss_mb(pid)
        visitors = [t.result() if t.done() and not t.cancelled() and t.exception() is None
                    else {"end": "cut at the run's time bound"} for t in tasks]
        stats = await engine_control(stack.engine_base, stack.key, "GET", "/stats")
        await asyncio.sleep(3)  # the last cancels land
        engine = {s["id"]: s for s in await engine_control(stack.engine_base, stack.key, "GET", "/sessions")}
        records: list[dict[str, Any]] = []
        five_reads = 0
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {stack.admin}"},
                                     timeout=30, limits=httpx.Limits(max_connections=20)) as c:
            rsem = asyncio.Semaphore(20)

            async def read(sid: str) -> None:
                nonlocal five_reads
                async with rsem:
                    r = await c.get(f"/v1/sessions/{sid}")
                if r.status_code >= 500:
                    five_reads += 1
                elif r.status_code == 200:
                    records.append(r.json())

            await asyncio.gather(*(read(v["id"]) for v in visitors if "id" in v))
            active = (await c.get("/v1/sessions?status=active&limit=100")).json()["data"]
        return {"n": n, "visitors": visitors, "records": records, "engine": engine, "stats": stats, "cpu": cpu,
                "rss0": rss0, "peak": peak, "rss_end": rss_end, "wall": wall, "live_seen": live[1],
                "five_reads": five_reads, "idle_rate": idle_rate, "busy": busy, "cpu_samples": cpu_samples,
                "server_active": len(active), "alive": stack.alive(), "log": stack.log_summary("server")}
    finally:
        await stack.close()


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    n, recs = res["n"], res["records"]
    late = [ts(r["endedAt"]) - ts(r["endsAt"]) for r in recs  # type: ignore[operator]
            if r.get("endReason") == "cap" and r.get("endsAt") and r.get("endedAt")]
    cancelled = []
    for r in recs:
        up = res["engine"].get(r.get("upstreamId") or "")
        if r.get("endsAt") and up and up["status"] == "CANCELLED" and up["endedAt"]:
            cancelled.append(ts(up["endedAt"]) - ts(r["endsAt"]))  # type: ignore[operator]
    events = sorted([(ts(r["startedAt"]), 1) for r in recs if r.get("startedAt")]
                    + [(ts(r["endedAt"]), -1) for r in recs if r.get("startedAt") and r.get("endedAt")],
                    key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, d in events:
        running += d
        most = max(most, running)
    starts = [ts(r["startedAt"]) for r in recs if r.get("startedAt")]
    # the server's CPU in three phases: ramp (first start → last delivery), hold (all live: last
    # delivery → first cap), ends (first cap → last end), in % of one core
    cs = res["cpu_samples"]

    def cpu_at(t: float) -> float:
        return min(cs, key=lambda c: abs(c[0] - t))[1] if cs else float("nan")

    phases: dict[str, tuple[float, float]] = {}
    caps = [ts(r["endsAt"]) for r in recs if r.get("endsAt")]
    ended = [ts(r["endedAt"]) for r in recs if r.get("endedAt")]
    if cs and starts and caps and ended:
        t_first = cs[0][0]
        marks = {"ramp": (t_first, max(starts)), "hold": (max(starts), min(caps)), "ends": (min(caps), max(ended))}
        for name, (a, b) in marks.items():
            if b - a >= 1.0:
                phases[name] = (b - a, (cpu_at(b) - cpu_at(a)) / (b - a) * 100)
    ends = Counter(r.get("endReason") or r.get("status") for r in recs)
    vs = res["visitors"]
    started = sum(1 for v in vs if "id" in v)
    return {
        "phases": phases, "late": late, "cancelled": cancelled, "most_running": most,
        "ramp": (max(starts) - min(starts)) if starts else float("nan"),  # type: ignore[type-var,operator]
        "ends": ends, "non_cap": sum(k for r, k in ends.items() if r != "cap") + (n - len(recs)),
        "five": sum(v.get("busy", 0) for v in vs) + sum(1 for v in vs if v.get("status", 0) >= 500) + res["five_reads"],
        "errors": Counter(v["error"] for v in vs if "error" in v),
        "refused": Counter(v["refused"] for v in vs if "refused" in v),
        "leaks_engine": sum(1 for s in res["engine"].values() if s["status"] not in TERMINAL),
        "started": started,
        "kb_per": (res["peak"] - res["rss0"]) * 1024 / max(1, started),
        "ms_per": res["cpu"]["server"] * 1000 / max(1, started),
        "busy_msgs": Counter(v["busy_msg"] for v in vs if "busy_msg" in v),
        "busy_answers": sum(v.get("busy", 0) for v in vs) + sum(1 for v in vs if v.get("status") == 503),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--reference", type=int, default=200, help="the reference run's sessions (0: none)")
    ap.add_argument("--max-duration", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--logs-dir", type=Path, default=None, help="keep the server's and engine's stderr here")
    args = ap.parse_args()
    t_all = time.time()
    with procstack.pinned_code() as snapshot:
        await run_all(args, t_all, snapshot.commit)


async def run_all(args: argparse.Namespace, t_all: float, code: str) -> None:
    results = []
    for n in ([args.reference] if args.reference else []) + [args.sessions]:
        print(f"[{time.strftime('%H:%M:%S')}] run of {n} ...", file=sys.stderr, flush=True)
        res = await one_run(n, args)
        res["sum"] = summarize(res)
        results.append(res)
        print(f"[{time.strftime('%H:%M:%S')}]   ends {dict(res['sum']['ends'])}, wall {res['wall']:.0f} s",
              file=sys.stderr, flush=True)

    def ms(values: list[float], q: float | None = None) -> str:
        if not values:
            return "-"
        return f"{(max(values) if q is None else pct(values, q)) * 1000:.0f}"

    spec: list[tuple[str, Any]] = [
        ("sessions asked / started", lambda r, s: f"{r['n']} / {s['started']}"),
        ("503 server_busy answers (retried)", lambda r, s: f"{s['busy_answers']}"),
        ("1-s samples: instance busy / of", lambda r, s: f"{sum(k for b, k in r['busy'].items() if b != 'not busy')}"
                                             f" / {sum(r['busy'].values())}"),
        ("most RUNNING at once (records)", lambda r, s: f"{s['most_running']}"),
        ("  ramp: first → last delivery (s)", lambda r, s: f"{s['ramp']:.1f}"),
        ("ended by the cap", lambda r, s: f"{s['ends'].get('cap', 0)}"),
        ("cap lateness endedAt−endsAt p50 (ms)", lambda r, s: ms(s["late"], .5)),
        ("  p99 (ms)", lambda r, s: ms(s["late"], .99)),
        ("  max (ms)", lambda r, s: ms(s["late"])),
        ("upstream cancelled − endsAt p99 (ms)", lambda r, s: ms(s["cancelled"], .99)),
        ("  max (ms)", lambda r, s: ms(s["cancelled"])),
        ("server RSS MB before / peak / end", lambda r, s: f"{r['rss0']:.0f} / {r['peak']:.0f} / {r['rss_end']:.0f}"),
        ("RSS growth per session started (KB)", lambda r, s: f"{s['kb_per']:.0f}"),
        ("server CPU seconds (first start → last end)", lambda r, s: f"{r['cpu']['server']:.1f}"),
        ("  of which idle baseline (s)", lambda r, s: f"{r['idle_rate'] * r['wall']:.1f}"),
        ("CPU per session started (ms)", lambda r, s: f"{s['ms_per']:.1f}"),
        ("server CPU % of a core: ramp / hold / cap ends",
         lambda r, s: " / ".join(f"{s['phases'][k][1]:.0f}" if k in s["phases"] else "-" for k in ("ramp", "hold", "ends"))),
        ("  phase lengths (s)",
         lambda r, s: " / ".join(f"{s['phases'][k][0]:.0f}" if k in s["phases"] else "-" for k in ("ramp", "hold", "ends"))),
        ("CPU s: load generator / engine / redis",
         lambda r, s: f"{r['cpu']['loadgen']:.1f} / {r['cpu']['engine']:.1f} / {r['cpu'].get('redis', 0):.1f}"),
        ("upstream requests / session", lambda r, s: f"{sum(r['stats']['requests'].get(k, 0) for k in ('create', 'get', 'consume', 'delete')) / r['n']:.1f}"),
        ("peak upstream requests/s (budget 500)", lambda r, s: f"{r['stats']['peakPerSecond']}"),
        ("errors: not ended by cap (incl. never started) / 5xx / exceptions",
         lambda r, s: f"{s['non_cap']} / {s['five']} / {sum(s['errors'].values())}"),
        ("leaks: engine not terminal / server active", lambda r, s: f"{s['leaks_engine']} / {r['server_active']}"),
        ("server log: warn/error/tracebacks",
         lambda r, s: f"{r['log']['levels'].get('WARNING', 0)}/{r['log']['levels'].get('ERROR', 0)}"
                      f"/{r['log']['tracebacks']}"),
        ("wall seconds", lambda r, s: f"{r['wall']:.0f}"),
    ]
    rows = [(name, [f(r, r["sum"]) for r in results]) for name, f in spec]
    heads = [f"{r['n']} sessions" + (" (reference)" if len(results) > 1 and i == 0 else "")
             for i, r in enumerate(results)]
    print(f"live sessions: maxDuration {args.max_duration} s, each with its signal socket open; engine provisioning "
          f"{DELAY}, honourMaxDuration off, connectGrace 900 s; AVATAR_SERVER_UPSTREAM_MAX_RPS={MAX_RPS} "
          f"(not budget-bound); {args.warmup} warm-up sessions before each run")
    w = max(len(r[0]) for r in rows)
    cw = [max(len(h), *(len(r[1][i]) for r in rows)) for i, h in enumerate(heads)]
    print(f"{'':<{w}}  " + "  ".join(f"{h:>{cw[i]}}" for i, h in enumerate(heads)))
    for name, vals in rows:
        print(f"{name:<{w}}  " + "  ".join(f"{v:>{cw[i]}}" for i, v in enumerate(vals)))
    for r in results:
        s = r["sum"]
        other = {k: v for k, v in s["ends"].items() if k != "cap"}
        if other or s["refused"] or s["errors"]:
            print(f"{r['n']} sessions: other ends {other}, refused {dict(s['refused'])}, "
                  f"errors {dict(s['errors'].most_common(3))}")
        if s["busy_msgs"]:
            print(f"503 server_busy messages, {r['n']} sessions (visitors' last): "
                  + "; ".join(f"{k}× {m}" for m, k in s["busy_msgs"].most_common(3)))
        if any(b != "not busy" for b in r["busy"]):
            print(f"busy reasons seen, {r['n']} sessions: " + "; ".join(f"{k}× {b}" for b, k in r["busy"].most_common(4)))
        if r["log"]["distinct"] or r["log"]["tracebacks"]:
            print(f"server log, {r['n']} sessions: " + "; ".join(f"{k}× {m}" for m, k in r["log"]["distinct"]))
        if any(code is not None for code in r["alive"].values()):
            print(f"{r['n']} sessions: a process exited during the run: {r['alive']}")
    print("targets: 0 errors, 0 leaks, cap lateness p99 <= 1000 ms, <= 64 KB and <= 10 ms CPU per session")
    print(f"code: commit {code} (extracted once, every run); wall seconds, all runs: {time.time() - t_all:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
