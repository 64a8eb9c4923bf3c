"""Flash crowd (issue 9): 1,000 visitors in 10 s on two sites, with the waiting room on, learned, off.

Three runs, each with fresh processes, all on 127.0.0.1 (``procstack.Stack``):
  * the local engine alone standing in for Runway: concurrency 40 (beyond it sessions wait
    NOT_READY with ``queued: true``), provisioning lognormal 2.5 s median (σ 0.35), a long
    connect grace (the visitors never open media, so only the server's cap ends a session),
  * avatar_server in Runway mode pointed at it, its own Redis, the request budget at its default
    (50/s), the per-visitor start limit off (the crowd comes from one address), the provisioning
    deadline long enough for the whole crowd to be served,
  * the load generator (this process): 1,000 visitors arriving evenly over 10 s, one in ten on a
    second site interleaved with a crowd site's nine. Each visitor POSTs ``/v1/sessions`` with its
    site's publishable key and Origin (maxDuration 10), opens its signal socket, waits for the
    credentials (or an end) and stays until the ``ended`` frame.

Runs: ``on`` AVATAR_SERVER_UPSTREAM_CONCURRENCY=40; ``learned`` the setting 0 (the limit learned
from the engine's first ``queued: true``); ``off`` AVATAR_SERVER_WAITING_ROOM=off (every start
goes straight upstream, the engine queues).

Prints, per run side by side: served / refused (by code) / ends by reason, the engine's peak
requests in any second against the budget, upstream requests per session, the engine's peak of
sessions alive against its concurrency, wait (start → credentials) p50/p95 per site, the server
process's CPU seconds and peak RSS (and the CPU of what shared the cores: the load generator,
the engine, the server's Redis), leaks, and the server log's warnings/errors/tracebacks.

Each run takes ~5–6 minutes: 1,000 sessions × (2.5 s provisioning + 10 s cap) over 40 upstream
slots is ~320 s however they wait. A run is cut at the provisioning deadline + 150 s.

    python bench/flash_crowd.py [--runs on learned off] [--visitors 1000] [--provision-timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import procstack
from measure import engine_control, pct, proc_cpu_seconds, proc_peak_rss_mb, proc_rss_mb
from procstack import Stack

ENGINE_CONCURRENCY = 40
DELAY = "lognormal:2.5,0.35"
MAX_DURATION = 10
BUDGET = 50
SITES = {"crowd": "https://crowd.example", "second": "https://second.example"}
RUNS = {
    "on": {"AVATAR_SERVER_UPSTREAM_CONCURRENCY": str(ENGINE_CONCURRENCY)},
    "learned": {"AVATAR_SERVER_UPSTREAM_CONCURRENCY": "0"},
    "off": {"AVATAR_SERVER_WAITING_ROOM": "off"},
}
LABELS = {"on": "room on (40)", "learned": "room learned (0)", "off": "room off"}


async def visitor(http: aiohttp.ClientSession, base: str, site: str, key: str, at: float) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, at - time.time()))
    origin = SITES[site]
    v: dict[str, Any] = {"site": site, "t0": time.time(), "positions": []}
    try:
        async with http.post(base + "/v1/sessions",
                             json={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"},
                                   "maxDuration": MAX_DURATION},
                             headers={"Authorization": f"Bearer {key}", "Origin": origin}) as r:
            v["status"] = r.status
            body = await r.json(content_type=None)
        if r.status != 201:
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            v["refused"] = f"{r.status} {code}"
            if isinstance(body, dict):
                v["refused_msg"] = re.sub(r"[0-9]+\.[0-9]+ s|\([0-9]+ waiting\)", "N", body["error"].get("message", ""))
            return v
        v["id"] = body["id"]
        async with http.ws_connect(f"{base}/v1/sessions/{body['id']}/signal",
                                   params={"token": body["clientToken"]}, headers={"Origin": origin}) as ws:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                f = json.loads(msg.data)
                if f["type"] == "status" and f.get("position"):
                    v["positions"].append(f["position"])
                elif f["type"] == "credentials":
                    v["t_cred"] = time.time()
                elif f["type"] == "ended":
                    v["end"] = f["reason"]
                    break
            if "end" not in v:
                v["end"] = "socket closed, no ended frame"
    except asyncio.CancelledError:
        v["end"] = "cut at the run's time bound"
        raise
    except Exception as exc:  # noqa: BLE001 — counted and shown
        v["error"] = f"{type(exc).__name__}: {exc}"[:160]
    return v


async def watch(http: aiohttp.ClientSession, stack: Stack, admin: dict[str, str], out: list[dict[str, Any]]) -> None:
    """Once a second: the server's waiting room and budget (``GET /v1/waiting-room``) and the engine's counters."""
    eng = {"Authorization": f"Bearer {stack.key}", "X-Runway-Version": "2024-11-06"}
    while True:
        t = time.time()
        sample: dict[str, Any] = {"t": t}
        try:
            async with http.get(stack.server_base + "/v1/waiting-room", headers=admin) as r:
                sample["room"] = await r.json()
            async with http.get(stack.engine_base + "/_control/stats", headers=eng) as r:
                st = await r.json()
            sample["engine"] = {"requests": st["requests"], "alive": st["alive"], "queued": st["queued"]}
        except Exception as exc:  # noqa: BLE001 — a missed sample is only a gap
            sample["error"] = type(exc).__name__
        out.append(sample)
        await asyncio.sleep(max(0.0, 1.0 - (time.time() - t)))


def trace_summary(trace: list[dict[str, Any]]) -> dict[str, Any]:
    rooms = [s["room"] for s in trace if "room" in s]
    busy = Counter(re.sub(r"[0-9.]+ s", "N s", r["busy"]) for r in rooms if r.get("busy"))
    limits = Counter((r.get("upstreamLimit"), r.get("limitLearned")) for r in rooms)
    eng = [(s["t"], s["engine"]["requests"]) for s in trace if "engine" in s]
    per_s: dict[str, float] = {}
    for (t0, a), (t1, b) in itertools.pairwise(eng):
        for op in ("create", "get", "consume", "delete"):
            per_s[op] = max(per_s.get(op, 0.0), (b.get(op, 0) - a.get(op, 0)) / max(1e-3, t1 - t0))
        tot = sum(b.get(op, 0) - a.get(op, 0) for op in ("create", "get", "consume", "delete")) / max(1e-3, t1 - t0)
        per_s["all"] = max(per_s.get("all", 0.0), tot)
    return {"busy": busy, "limits": limits, "max_waiting": max((r.get("waiting", 0) for r in rooms), default=0),
            "max_used": max((r.get("budget", {}).get("usedLastSecond", 0) for r in rooms), default=0),
            "per_s": per_s, "busy_samples": sum(busy.values()), "samples": len(rooms)}


async def one_run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(
        prefix=f"avatar-bench-crowd-{mode}-",
        engine_env={"AVATAR_ENGINE_CONCURRENCY": str(ENGINE_CONCURRENCY), "AVATAR_ENGINE_PROVISION_DELAY": DELAY,
                    "AVATAR_ENGINE_CONNECT_GRACE": "900"},
        server_env={"AVATAR_SERVER_START_RATE_PER_MINUTE": "0",
                    "AVATAR_SERVER_PROVISION_TIMEOUT_SECONDS": str(args.provision_timeout),
                    "AVATAR_SERVER_UPSTREAM_MAX_RPS": str(BUDGET), **RUNS[mode]},
        logs_dir=args.logs_dir, log_name=f"flash-{mode}")
    try:
        await stack.start()
        base = stack.server_base
        admin = {"Authorization": f"Bearer {stack.admin}"}
        keys: dict[str, str] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as http:
            for name, origin in SITES.items():
                async with http.post(base + "/v1/sites", headers=admin, json={
                        "name": name, "allowedOrigins": [origin], "avatarIds": ["cooking-teacher"],
                        "maxConcurrentSessions": 1000}) as r:
                    assert r.status == 201, await r.text()
                    keys[name] = (await r.json())["publishableKey"]
            await engine_control(stack.engine_base, stack.key, "DELETE", "/stats")
            pids = {"server": stack.server.pid, "engine": stack.engine.pid, "redis": stack.redis_pid}  # type: ignore[union-attr]
            cpu0 = {k: proc_cpu_seconds(p) for k, p in pids.items() if p}
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            rss0 = proc_rss_mb(pids["server"])
            t0 = time.time() + 0.5
            plan = [("second" if i % 10 == 5 else "crowd", t0 + i * args.spread / args.visitors)
                    for i in range(args.visitors)]
            tasks = [asyncio.create_task(visitor(http, base, site, keys[site], at)) for site, at in plan]
            trace: list[dict[str, Any]] = []
            tracer = asyncio.create_task(watch(http, stack, admin, trace))
            bound = args.provision_timeout + 150
            _, pending = await asyncio.wait(tasks, timeout=bound)
            tracer.cancel()
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            wall = time.time() - t0
            visitors = []
            for t, (site, _) in zip(tasks, plan, strict=True):
                if t.cancelled() or t.exception() is not None:
                    visitors.append({"site": site, "end": "cut at the run's time bound", "positions": []})
                else:
                    visitors.append(t.result())
            cpu = {k: proc_cpu_seconds(p) - cpu0[k] for k, p in pids.items() if p}
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu["loadgen"] = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
            peak_rss = proc_peak_rss_mb(pids["server"])
            stats = await engine_control(stack.engine_base, stack.key, "GET", "/stats")
            await asyncio.sleep(3)  # the last cancels land
            engine_sessions = await engine_control(stack.engine_base, stack.key, "GET", "/sessions")
            async with http.get(base + "/v1/sessions?status=active&limit=100", headers=admin) as r:
                active = (await r.json())["data"]
            # why the sessions that did not end by the cap ended: the engine's failure, and whether
            # the server's log says it lost the session's provisioning lease
            lost_lease = set(re.findall(r"lost the provisioning lease \[session_id=([0-9a-f-]+)",
                                        stack.server_log.read_text(errors="replace")))
            failures: Counter[str] = Counter()
            for v in visitors:
                if v.get("end") in (None, "cap") or "id" not in v:
                    continue
                async with http.get(f"{base}/v1/sessions/{v['id']}", headers=admin) as r:
                    rec = await r.json()
                up = rec.get("upstreamId")
                failure = "no upstream session"
                if up:
                    async with http.get(f"{stack.engine_base}/v1/realtime_sessions/{up}", headers={
                            "Authorization": f"Bearer {stack.key}", "X-Runway-Version": "2024-11-06"}) as r:
                        e = await r.json()
                    failure = f"engine {e.get('status')} {e.get('failureCode') or e.get('failure') or ''}".strip()
                lost = "lease lost" if v["id"] in lost_lease else "lease kept"
                failures[f"{v['end']}: {failure}, {lost}"] += 1
        if args.logs_dir is not None:
            args.logs_dir.mkdir(parents=True, exist_ok=True)
            (args.logs_dir / f"flash-{mode}-trace.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trace))
        return {"visitors": visitors, "stats": stats, "cpu": cpu, "peak_rss": peak_rss, "rss0": rss0,
                "wall": wall, "alive": stack.alive(), "log": stack.log_summary("server"),
                "engine_log": stack.log_summary("engine"),
                "engine_open": sum(1 for s in engine_sessions if s["status"] not in ("COMPLETED", "FAILED",
                                                                                      "CANCELLED")),
                "server_active": len(active), "trace": trace, "failures": failures}
    finally:
        await stack.close()


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    vs = res["visitors"]
    refused = Counter(v["refused"] for v in vs if "refused" in v)
    ends = Counter(v["end"] for v in vs if "end" in v)
    errors = Counter(v["error"].split(":")[0] for v in vs if "error" in v)
    served = [v for v in vs if "t_cred" in v]
    waits = {s: [v["t_cred"] - v["t0"] for v in served if v["site"] == s] for s in SITES}
    req = res["stats"]["requests"]
    upstream = sum(req.get(k, 0) for k in ("create", "get", "consume", "delete"))
    admitted = sum(1 for v in vs if "id" in v)
    five = sum(1 for v in vs if v.get("status", 0) >= 500)
    busy = sum(n for k, n in refused.items() if k.startswith("503 server_busy"))
    return {"trace": trace_summary(res["trace"]), "refused": refused, "ends": ends, "errors": errors, "served": len(served), "waits": waits,
            "upstream": upstream, "req": req, "admitted": admitted, "five": five, "busy": busy,
            "queued_seen": sum(1 for v in vs if v["positions"]),
            "max_position": max((max(v["positions"]) for v in vs if v["positions"]), default=0)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    ap.add_argument("--visitors", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=10.0, help="seconds over which the visitors arrive")
    ap.add_argument("--provision-timeout", type=int, default=600,
                    help="AVATAR_SERVER_PROVISION_TIMEOUT_SECONDS (waiting included)")
    ap.add_argument("--logs-dir", type=Path, default=None, help="keep the server's and engine's stderr here")
    args = ap.parse_args()
    t_all = time.time()
    with procstack.pinned_code() as snapshot:
        await run_all(args, t_all, snapshot.commit)


async def run_all(args: argparse.Namespace, t_all: float, code: str) -> None:
    results: dict[str, dict[str, Any]] = {}
    for mode in args.runs:
        print(f"[{time.strftime('%H:%M:%S')}] run {LABELS[mode]} ...", file=sys.stderr, flush=True)
        res = await one_run(mode, args)
        results[mode] = res | {"sum": summarize(res)}
        s = results[mode]["sum"]
        print(f"[{time.strftime('%H:%M:%S')}]   served {s['served']}, ends {dict(s['ends'])}, "
              f"wall {res['wall']:.0f} s", file=sys.stderr, flush=True)

    modes = list(results)
    n_crowd = sum(1 for i in range(args.visitors) if i % 10 != 5)
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, f: Any) -> None:
        rows.append((name, [f(results[m], results[m]["sum"]) for m in modes]))

    def fmt_counter(c: Counter[str]) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(c.items(), key=lambda kv: -kv[1])) or "0"

    row("visitors (crowd + second site)", lambda r, s: f"{len(r['visitors'])}")
    row("served (credentials received)", lambda r, s: f"{s['served']}")
    row("refused at start", lambda r, s: fmt_counter(s["refused"]))
    row("ended: cap", lambda r, s: f"{s['ends'].get('cap', 0)}")
    row("ended: other reasons", lambda r, s: fmt_counter(Counter({k: n for k, n in s["ends"].items() if k != "cap"})))
    row("visitor errors (exceptions)", lambda r, s: fmt_counter(s["errors"]))
    row("5xx answers to starts (503 busy incl.)", lambda r, s: f"{s['five']} ({s['busy']})")
    row("saw a queued place (max position)", lambda r, s: f"{s['queued_seen']} ({s['max_position']})")
    row(f"peak upstream requests/s (budget {BUDGET})", lambda r, s: f"{r['stats']['peakPerSecond']}")
    row("upstream requests, total", lambda r, s: f"{s['upstream']}")
    row("  create/get/consume/delete",
        lambda r, s: "/".join(str(s["req"].get(k, 0)) for k in ("create", "get", "consume", "delete")))
    row("upstream requests / session started", lambda r, s: f"{s['upstream'] / max(1, s['admitted']):.1f}")
    row(f"engine peakAlive (its concurrency {ENGINE_CONCURRENCY})", lambda r, s: f"{r['stats']['peakAlive']}")
    for site in SITES:
        row(f"wait start→credentials p50 s, {site}", lambda r, s, site=site: f"{pct(s['waits'][site], .5):.1f}")
        row(f"  p95 s, {site}", lambda r, s, site=site: f"{pct(s['waits'][site], .95):.1f}")
    row("second/crowd median wait", lambda r, s: f"{pct(s['waits']['second'], .5) / pct(s['waits']['crowd'], .5):.2f}")
    row("server CPU seconds", lambda r, s: f"{r['cpu']['server']:.1f}")
    row("server RSS MB before / peak", lambda r, s: f"{r['rss0']:.0f} / {r['peak_rss']:.0f}")
    row("CPU s: load generator / engine / redis",
        lambda r, s: f"{r['cpu']['loadgen']:.1f} / {r['cpu']['engine']:.1f} / {r['cpu'].get('redis', 0):.1f}")
    row("leaks: engine open / server active", lambda r, s: f"{r['engine_open']} / {r['server_active']}")
    row("server log: warn/error/tracebacks",
        lambda r, s: f"{r['log']['levels'].get('WARNING', 0)}/{r['log']['levels'].get('ERROR', 0)}"
                     f"/{r['log']['tracebacks']}")
    row("wall seconds (first arrival → last end)", lambda r, s: f"{r['wall']:.0f}")
    row("1-s samples: limit in force (learned?)",
        lambda r, s: ", ".join(f"{lim}{'(L)' if lr else ''}×{n}" for (lim, lr), n in s["trace"]["limits"].most_common(2)))
    row("1-s samples: instance busy / of", lambda r, s: f"{s['trace']['busy_samples']} / {s['trace']['samples']}")
    row("1-s samples: most waiting in the room", lambda r, s: f"{s['trace']['max_waiting']}")
    row("1-s samples: most requests/s (engine)", lambda r, s: f"{s['trace']['per_s'].get('all', 0):.0f}")

    print(f"flash crowd: {args.visitors} visitors over {args.spread:g} s ({n_crowd} crowd site, "
          f"{args.visitors - n_crowd} second site, interleaved), maxDuration {MAX_DURATION} s; engine concurrency "
          f"{ENGINE_CONCURRENCY}, provisioning {DELAY}, connectGrace 900 s; budget {BUDGET} req/s; "
          f"AVATAR_SERVER_PROVISION_TIMEOUT_SECONDS={args.provision_timeout}")
    w = max(len(r[0]) for r in rows)
    cw = [max(len(LABELS[m]), *(len(r[1][i]) for r in rows)) for i, m in enumerate(modes)]
    print(f"{'':<{w}}  " + "  ".join(f"{LABELS[m]:>{cw[i]}}" for i, m in enumerate(modes)))
    for name, vals in rows:
        print(f"{name:<{w}}  " + "  ".join(f"{v:>{cw[i]}}" for i, v in enumerate(vals)))
    for m in modes:
        r = results[m]
        if r["log"]["distinct"] or r["log"]["tracebacks"]:
            print(f"server log, {LABELS[m]}: " + "; ".join(f"{n}× {msg}" for msg, n in r["log"]["distinct"]))
        if any(code is not None for code in r["alive"].values()):
            print(f"{LABELS[m]}: a process exited during the run: {r['alive']}")
        msgs = Counter(v["refused_msg"] for v in r["visitors"] if "refused_msg" in v)
        if msgs:
            print(f"refusal messages, {LABELS[m]}: " + "; ".join(f"{n}× {k}" for k, n in msgs.most_common(3)))
        if r["failures"]:
            print(f"ends other than cap, {LABELS[m]}: " + "; ".join(f"{n}× {k}" for k, n in r["failures"].most_common(6)))
        if r["sum"]["trace"]["busy"]:
            print(f"busy reasons seen, {LABELS[m]}: " + "; ".join(f"{n}× {k}" for k, n in r["sum"]["trace"]["busy"].most_common(4)))
        errs = Counter(v["error"] for v in r["visitors"] if "error" in v)
        if errs:
            print(f"visitor errors, {LABELS[m]}: " + "; ".join(f"{n}× {e}" for e, n in errs.most_common(3)))
    print(f"targets: 0 ends other than cap/client; engine peakAlive <= {ENGINE_CONCURRENCY} with the room on; "
          f"peak requests/s <= {BUDGET}; second site's median wait < 0.5 × the crowd site's")
    print(f"code: commit {code} (extracted once, every run); wall seconds, all runs: {time.time() - t_all:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
