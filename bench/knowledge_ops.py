"""Knowledge management figures: what the budget bookkeeping costs.

Runs avatar_server on its embedded defaults (local engine, its own process and Redis) on
127.0.0.1 and measures, over real HTTP:

  * counting tokens of a 200,000-character document (in this process, the server's counter),
  * ``POST /v1/documents`` with 200,000 characters (count + forward upstream + Redis),
  * ``PUT /v1/avatars/{id}/documents/{documentId}`` one at a time (lock, Lua reserve, upstream PATCH),
  * C links at once to one avatar (serialised by the knowledge lock): wall time and per-link latency,
  * ``GET /v1/documents?limit=100`` and ``GET /v1/avatars?limit=100`` pages.

    python bench/knowledge_ops.py [--links 40] [--concurrency 10] [--documents 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatar_server.catalog.tokens import count_tokens  # noqa: E402
from avatar_server.store.embedded import free_port  # noqa: E402

ADMIN = "adm_bench_" + "k" * 24
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR4nGM4UaFBEmIY1TCqY"
       "fhqAAADaGgQ43GRdgAAAABJRU5ErkJggg==")
PROSE = "The quick brown fox jumps over the lazy dog. " * 4500


def ms(values: list[float]) -> str:
    s = sorted(values)
    p95 = s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
    return f"p50 {statistics.median(s) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (n={len(s)})"


async def timed(c: httpx.AsyncClient, method: str, path: str, body: object = None) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = await c.request(method, path, json=body)
    return time.perf_counter() - t, r


async def run(args: argparse.Namespace, base: str) -> None:
    big = PROSE[:200_000]
    t = time.perf_counter()
    tokens = count_tokens(big)
    print(f"count_tokens(200,000 chars of English) = {tokens} in {(time.perf_counter() - t) * 1000:.1f} ms")

    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as c:
        creates = []
        for _ in range(5):
            dt, r = await timed(c, "POST", "/v1/documents", {"name": "big", "content": big})
            assert r.status_code == 201, r.text
            creates.append(dt)
        print(f"POST /v1/documents (200,000 chars): {ms(creates)}")

        small = []
        for i in range(max(args.documents, args.links)):
            r = await c.post("/v1/documents", json={"name": f"doc {i}", "content": f"Fact {i}: " + PROSE[:400]})
            assert r.status_code == 201, r.text
            small.append(r.json()["id"])

        async def avatar(name: str) -> str:
            r = await c.post("/v1/avatars", json={"name": name, "referenceImage": PNG, "personality": "Be kind.",
                                                  "voice": {"type": "runway-live-preset", "presetId": "luna"}})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        one = await avatar("sequential")
        seq = []
        for doc_id in small[: min(args.links, 50)]:
            dt, r = await timed(c, "PUT", f"/v1/avatars/{one}/documents/{doc_id}")
            assert r.status_code == 200, r.text
            seq.append(dt)
        # reference: the same links as bare upstream calls (what the server sends, without the
        # lock, the Lua budget check and the Redis bookkeeping), straight to the engine
        ref_id = await avatar("reference")
        upstream = {"X-Runway-Version": "2024-11-06"}
        ref, linked = [], []
        for doc_id in small[: min(args.links, 50)]:
            linked.append(doc_id)
            t = time.perf_counter()
            r = await c.patch(f"/engine/v1/avatars/{ref_id}", json={"documentIds": linked}, headers=upstream)
            assert r.status_code == 200, r.text
            ref.append(time.perf_counter() - t)
        print(f"PUT link, one at a time: {ms(seq)}  |  reference, bare upstream PATCH: {ms(ref)}")

        many = await avatar("concurrent")
        sem = asyncio.Semaphore(args.concurrency)

        async def link(doc_id: str) -> float:
            async with sem:
                dt, r = await timed(c, "PUT", f"/v1/avatars/{many}/documents/{doc_id}")
                assert r.status_code == 200, r.text
                return dt

        t = time.perf_counter()
        lat = await asyncio.gather(*(link(d) for d in small[: min(args.links, 50)]))
        wall = time.perf_counter() - t
        print(f"PUT link, {args.concurrency} at once to one avatar: {len(lat)} links in {wall:.2f} s "
              f"({len(lat) / wall:.0f}/s); per link {ms(list(lat))}")

        pages = []
        for _ in range(10):
            dt, r = await timed(c, "GET", "/v1/documents?limit=100")
            assert r.status_code == 200 and len(r.json()["data"]) == min(100, len(small) + 5), r.text
            pages.append(dt)
        print(f"GET /v1/documents?limit=100 (with usedBy): {ms(pages)}")
        pages = []
        for _ in range(10):
            dt, r = await timed(c, "GET", "/v1/avatars?limit=100")
            assert r.status_code == 200, r.text
            pages.append(dt)
        print(f"GET /v1/avatars?limit=100 ({len(r.json()['data'])} avatars): {ms(pages)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--links", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--documents", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp:
        env = {**os.environ, "AVATAR_SERVER_PORT": str(port), "AVATAR_SERVER_ADMIN_TOKEN": ADMIN,
               "AVATAR_SERVER_DATA_DIR": tmp, "AVATAR_SERVER_DEMO": "0", "AVATAR_SERVER_LOG_LEVEL": "WARNING"}
        env.pop("RUNWAYML_API_SECRET", None)
        proc = subprocess.Popen([sys.executable, "-m", "avatar_server"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    if httpx.get(base + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            asyncio.run(run(args, base))
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
