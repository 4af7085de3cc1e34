"""Soak: the real `sliceserve serve` under mixed load at about twice its capacity for a long run, with the
server's resident memory (RSS) sampled every minute. The question is whether RSS levels off.

1. Start the server (embedded SmolLM2-135M unless --model), wait for /health.
2. Capacity: a closed loop of --concurrency clients for --probe-s seconds; completed requests per second.
3. Load: Poisson arrivals at --load x capacity for --minutes: completions and chat, streamed and not,
   prompts of 1-200 words, max_tokens 4-48, a third with an SLO class, 1 in 10 streams cut off after the
   first chunk, 1 in 20 requests invalid (400). Clients in flight are capped (--max-inflight) so the load
   generator itself stays bounded; arrivals beyond the cap count as dropped by the client.
4. Print per minute: RSS, answers by status; at the end RSS at 5 and at --minutes minutes and the ratio.

    nice .venv/bin/python benchmarks/soak.py [--minutes 30] [--load 2] [--port 8790]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import time

import httpx

from sliceserve.bench.spawn import ServerProcess

WORDS = ("edge device model token cache latency schedule batch request server memory power the a of and to "
         "in small fast slow many few river mountain story question answer").split()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def make_request(rng: random.Random) -> tuple[str, dict, bool, bool]:
    """(path, body, stream, cut): one request of the mix."""
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 200)))
    chat = rng.random() < 0.5
    body: dict = {"max_tokens": rng.randint(4, 48), "temperature": rng.choice([0.0, 0.7, 1.0]),
                  "seed": rng.randrange(1 << 30)}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if rng.random() < 1 / 3:
        body["slo_class"] = "batch"
    if rng.random() < 0.05:
        body["temperature"] = -1     # invalid: a 400 that must not disturb anything
    stream = rng.random() < 0.5
    body["stream"] = stream
    return ("/v1/chat/completions" if chat else "/v1/completions"), body, stream, stream and rng.random() < 0.1


async def one(client: httpx.AsyncClient, rng: random.Random, counts: collections.Counter) -> None:
    path, body, stream, cut = make_request(rng)
    try:
        if not stream:
            r = await client.post(path, json=body)
            counts[str(r.status_code)] += 1
            return
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                counts[str(r.status_code)] += 1
                return
            async for line in r.aiter_lines():
                if cut and line.startswith("data:"):
                    counts["cut"] += 1
                    return
            counts["200"] += 1
    except httpx.HTTPError as exc:
        counts[type(exc).__name__] += 1


async def probe_capacity(url: str, concurrency: int, seconds: float) -> float:
    rng, counts = random.Random(1), collections.Counter()
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            await one(client, rng, counts)

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return (counts["200"] + counts["cut"]) / seconds


async def soak(url: str, pid: int, rate: float, minutes: float, max_inflight: int) -> list[float]:
    rng, counts = random.Random(2), collections.Counter()
    inflight: set[asyncio.Task] = set()
    samples: list[float] = []
    start = time.monotonic()
    next_sample = start
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=max_inflight)) as client:
        while (now := time.monotonic()) < start + minutes * 60:
            if now >= next_sample:
                samples.append(rss_mib(pid))
                print(f"min {len(samples) - 1:3d}  rss {samples[-1]:7.1f} MiB  inflight {len(inflight):3d}  "
                      f"answers {dict(sorted(counts.items()))}  load {loadavg()}", flush=True)
                next_sample += 60
            if len(inflight) < max_inflight:
                task = asyncio.ensure_future(one(client, rng, counts))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            else:
                counts["client_dropped"] += 1
            await asyncio.sleep(rng.expovariate(rate))
        samples.append(rss_mib(pid))
        for t in inflight:
            t.cancel()
    print(f"final answers {dict(sorted(counts.items()))}", flush=True)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--load", type=float, default=2.0, help="arrival rate as a multiple of measured capacity")
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument("--model", default=None)
    # The KV cache is allocated at start but its pages become resident only when a block is first used: with
    # the default budget (~4 GB for this model on a big machine) RSS climbs for a long time toward weights +
    # budget without any leak. A budget the mix fills within minutes makes the 5-minute sample include it,
    # so the 5 -> 30 minute ratio shows everything else.
    ap.add_argument("--kv-cache-memory-bytes", type=int, default=256 << 20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--probe-s", type=float, default=60)
    ap.add_argument("--max-inflight", type=int, default=128)
    ap.add_argument("--server-log", default="/tmp/sliceserve-soak-server.log", help="the server's stderr")
    args = ap.parse_args()
    serve_args = ["--model", args.model] if args.model else []
    if args.kv_cache_memory_bytes:
        serve_args += ["--kv-cache-memory-bytes", str(args.kv_cache_memory_bytes)]
    log = open(args.server_log, "w")
    server = ServerProcess(*serve_args, port=args.port, log=log)
    url, pid = server.url, server.pid
    try:
        status = httpx.get(url + "/v1/status", timeout=10).json()
        print(f"server pid {pid} up, rss {rss_mib(pid):.1f} MiB, kv blocks {status['queues']['kv_blocks_total']}, "
              f"load {loadavg()}", flush=True)
        capacity = asyncio.run(probe_capacity(url, args.concurrency, args.probe_s))
        rate = args.load * capacity
        print(f"capacity {capacity:.3f} req/s (closed loop, {args.concurrency} clients); offering {rate:.3f} req/s",
              flush=True)
        samples = asyncio.run(soak(url, pid, rate, args.minutes, args.max_inflight))
        health = httpx.get(url + "/health", timeout=10).status_code
        five, last = samples[min(5, len(samples) - 1)], samples[-1]
        print(f"RSS at 5 min {five:.1f} MiB, at {args.minutes:g} min {last:.1f} MiB, ratio {last / five:.3f} "
              f"(goal within 10%: {abs(last / five - 1) <= 0.10}); health after {health}; load {loadavg()}")
    finally:
        print(f"server exit code after SIGTERM: {server.stop(grace_s=60)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
