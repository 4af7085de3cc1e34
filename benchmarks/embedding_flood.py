"""Does an embedding flood starve the real-time class? The real server, two runs with the same real-time
arrivals: real-time streams alone, then beside embedding requests at `--flood-factor` x what the device
sustains for embeddings (measured first, closed loop). Prints real-time SLO attainment (the server's own
verdicts, `slo_report`) in both runs and the embedding throughput.

  .venv/bin/python benchmarks/embedding_flood.py --duration 150 --rt-rate 0.15 --flood-factor 3
  .venv/bin/python benchmarks/embedding_flood.py --url http://127.0.0.1:8000 ...   # a server already running

Real-time bounds: the SLICE paper's real-time class (TTFT 500 ms, TPOT 50 ms) stretched to this device as
`sliceserve bench` does (sliceserve.bench.device_scale: TPOT by l(1), TTFT by p(256), from --slo-scale, a pinned
--profile, or a fresh quick profile taken before the server starts; never from the server's /ready), sent in
the body beside `slo_class: realtime` (utility 100). Embeddings go in the server's `embedding` class (utility
0.5), their TTFT bound stretched by the same TTFT factor.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx

from sliceserve.bench.device_scale import DeviceScale, device_scale, latency_scale
from sliceserve.bench.spawn import ServerProcess

WORDS = ("sensor robot battery window garden kitchen signal river camera motor light door voltage map route "
         "weather engine store cable field music table screen filter valve pump").split()
QUESTIONS = ["Describe the steps to calibrate a temperature sensor.", "Explain how a robot arm avoids obstacles.",
             "What should I check when a smart lamp stops responding?", "Give me three tips for saving battery.",
             "How does a drone keep its altitude steady?", "Summarise why edge devices run small models."]


@dataclass
class Outcome:
    rt_met: list[bool] = field(default_factory=list)
    rt_status: dict[str, int] = field(default_factory=dict)
    rt_ttft_ms: list[float] = field(default_factory=list)
    rt_tpot_ms: list[float] = field(default_factory=list)
    emb_ok: int = 0
    emb_status: dict[str, int] = field(default_factory=dict)
    emb_latency_s: list[float] = field(default_factory=list)


def _count(d: dict[str, int], key: object) -> None:
    d[str(key)] = d.get(str(key), 0) + 1


def embed_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


async def realtime_stream(client: httpx.AsyncClient, url: str, prompt: str, args, bounds: dict, out: Outcome) -> None:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": args.rt_max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0, "slo_class": "realtime", "slo": bounds}
    report, status = None, "?"
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
            status = resp.status_code
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    report = chunk.get("slo_report", report)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    _count(out.rt_status, status)
    out.rt_met.append(bool(report and report["met"]))     # refused or failed counts as a miss
    if report and report["ttft_ms"] is not None:
        out.rt_ttft_ms.append(report["ttft_ms"])
        if report["tpot_ms"] is not None:
            out.rt_tpot_ms.append(report["tpot_ms"])


async def embed_once(client: httpx.AsyncClient, url: str, text: str, ttft_ms: float, out: Outcome) -> None:
    start = time.monotonic()
    try:
        resp = await client.post(url + "/v1/embeddings", json={"input": text, "encoding_format": "base64",
                                                               "slo": {"ttft_ms": ttft_ms}})
        status = resp.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    _count(out.emb_status, status)
    if status == 200:
        out.emb_ok += 1
        out.emb_latency_s.append(time.monotonic() - start)


async def measure_capacity(url: str, args, ttft_ms: float) -> float:
    """Embeddings per second the server completes with `--capacity-concurrency` requests always in flight."""
    rng, out = random.Random(args.seed + 7), Outcome()
    deadline = time.monotonic() + args.capacity_s

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            await embed_once(client, url, embed_text(rng, args.emb_words), ttft_ms * 100, out)
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.capacity_concurrency)))
    return out.emb_ok / (time.monotonic() - start)


def arrivals(args, flood_rate: float) -> tuple[list[float], list[float]]:
    """Poisson arrival times (seeded): real-time streams, and embeddings at `flood_rate` (0: none)."""
    rng_rt, rng_emb = random.Random(args.seed), random.Random(args.seed + 2)
    rt_times, t = [], rng_rt.expovariate(args.rt_rate)
    while t < args.duration:
        rt_times.append(t)
        t += rng_rt.expovariate(args.rt_rate)
    emb_times, t = [], 0.0
    while flood_rate > 0 and t < args.duration:
        emb_times.append(t)
        t += rng_emb.expovariate(flood_rate)
    return rt_times, emb_times


async def run(url: str, args, bounds: dict, emb_ttft_ms: float, flood_rate: float) -> tuple[Outcome, float]:
    rng_emb = random.Random(args.seed + 1)
    rt_times, emb_times = arrivals(args, flood_rate)
    out = Outcome()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        t0 = time.monotonic()

        async def at(when: float, coro) -> None:
            await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))
            await coro
        tasks = [at(w, realtime_stream(client, url, QUESTIONS[i % len(QUESTIONS)], args, bounds, out))
                 for i, w in enumerate(rt_times)]
        tasks += [at(w, embed_once(client, url, embed_text(rng_emb, args.emb_words), emb_ttft_ms, out))
                  for w in emb_times]
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
    return out, elapsed


def summary(name: str, out: Outcome, elapsed: float) -> dict:
    n = len(out.rt_met)
    pct = lambda xs, q: sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")  # noqa: E731
    row = {"run": name, "rt_requests": n, "rt_met": sum(out.rt_met), "rt_attainment": sum(out.rt_met) / n if n else 0,
           "rt_status": out.rt_status, "rt_ttft_p50_ms": pct(out.rt_ttft_ms, 0.5),
           "rt_ttft_p90_ms": pct(out.rt_ttft_ms, 0.9), "rt_tpot_p50_ms": pct(out.rt_tpot_ms, 0.5),
           "rt_tpot_p90_ms": pct(out.rt_tpot_ms, 0.9), "emb_ok": out.emb_ok, "emb_status": out.emb_status,
           "emb_per_s": out.emb_ok / elapsed, "emb_latency_p50_s": pct(out.emb_latency_s, 0.5),
           "elapsed_s": elapsed}
    print(f"{name:>12}: real-time {row['rt_met']}/{n} met = {row['rt_attainment']:.3f} (status {out.rt_status}; "
          f"TTFT p50/p90 {row['rt_ttft_p50_ms']:.0f}/{row['rt_ttft_p90_ms']:.0f} ms, TPOT p50/p90 "
          f"{row['rt_tpot_p50_ms']:.0f}/{row['rt_tpot_p90_ms']:.0f} ms); embeddings {out.emb_ok} ok = "
          f"{row['emb_per_s']:.2f}/s (status {out.emb_status}, p50 {row['emb_latency_p50_s']:.2f} s); "
          f"{elapsed:.0f} s", flush=True)
    return row


def loadavg() -> str:
    try:
        return open("/proc/loadavg").read().strip()
    except OSError:
        return "?"


def simulate(args) -> None:
    import embedding_flood_sim as sim   # noqa: PLC0415 - beside this file

    from sliceserve.core.latency import load_profile

    if args.simulate == "quick":
        from sliceserve.engine.llm import resolve_latency
        from sliceserve.model.loader import load_model

        device = resolve_latency(load_model(None, num_threads=1), None)
        if args.save_profile:   # the same device again later: --simulate PATH
            device.save(args.save_profile, {"device": f"quick estimate here; load average {loadavg()}"})
    else:
        device = load_profile(args.simulate)
    scale = latency_scale(device, slo_scale=args.slo_scale, ttft_scale=args.ttft_scale)
    bounds = {"ttft_ms": 500 * scale.ttft, "tpot_ms": 50 * scale.slo}
    emb_ttft_ms = 2000 * scale.ttft
    cap = args.capacity or sim.capacity(device, args, emb_ttft_ms / 1e3)
    flood = args.flood_factor * cap
    print(f"simulated device {device.name}: l(1) {device.decode_time(1) * 1e3:.1f} ms, p(256) "
          f"{device.prefill_time(256) * 1e3:.0f} ms, noise {args.noise}, slowdown {args.slowdown}; {scale}; "
          f"real-time bounds {bounds['ttft_ms']:.0f} ms TTFT / {bounds['tpot_ms']:.0f} ms TPOT; embedding capacity "
          f"{cap:.2f}/s, flood {flood:.2f}/s; load average {loadavg()}", flush=True)
    rows = []
    for name, rate in (("alone", 0.0), ("with flood", flood)):
        rt_times, emb_times = arrivals(args, rate)
        row = {"run": name, **sim.run(device, args, bounds, emb_ttft_ms, rate, rt_times, emb_times)}
        rows.append(row)
        print(f"{name:>12}: real-time {row['rt_met']}/{row['rt_requests']} met = {row['rt_attainment']:.3f} "
              f"(TTFT p50/p90 {row['rt_ttft_p50_ms']:.0f}/{row['rt_ttft_p90_ms']:.0f} ms, TPOT p50/p90 "
              f"{row['rt_tpot_p50_ms']:.0f}/{row['rt_tpot_p90_ms']:.0f} ms); embeddings {row['emb_ok']}/"
              f"{row['emb_sent']} = {row['emb_per_s']:.2f}/s", flush=True)
    gap = (rows[0]["rt_attainment"] - rows[1]["rt_attainment"]) * 100
    print(f"real-time attainment: alone {rows[0]['rt_attainment']:.3f}, with flood {rows[1]['rt_attainment']:.3f} "
          f"({gap:+.1f} points lost); goal: within 2 points")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "device": device.name, "scale": scale.describe(), "bounds": bounds,
                       "capacity_per_s": cap, "flood_per_s": flood, "runs": rows}, f, indent=1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (default: start `sliceserve serve` on a free port)")
    p.add_argument("--policy", default="slice")
    p.add_argument("--duration", type=float, default=150.0, help="seconds of arrivals per run")
    p.add_argument("--rt-rate", type=float, default=0.15, help="real-time arrivals per second")
    p.add_argument("--rt-max-tokens", type=int, default=48)
    p.add_argument("--emb-words", type=int, default=100, help="words per embedding input (~1.2 tokens each)")
    p.add_argument("--flood-factor", type=float, default=3.0, help="flood rate / measured embedding capacity")
    p.add_argument("--capacity-s", type=float, default=30.0)
    p.add_argument("--capacity-concurrency", type=int, default=8)
    p.add_argument("--capacity", type=float, help="skip the measurement: embeddings/s the device sustains")
    p.add_argument("--slo-scale", type=float)
    p.add_argument("--ttft-scale", type=float)
    p.add_argument("--profile", help="latency profile (file or built-in name) whose l(1) and p(256) set the SLO "
                   "scale; default: a fresh `sliceserve profile --quick` before the server starts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="live: alternate alone / with flood this many times")
    p.add_argument("--output", help="JSON file for the figures")
    p.add_argument("--simulate", metavar="PROFILE", help="run on the simulator instead: a latency profile (file "
                   "or built-in name) or 'quick' (measure the embedded model here) as the device")
    p.add_argument("--noise", type=float, default=0.2, help="--simulate: lognormal sd of each iteration's time")
    p.add_argument("--slowdown", type=float, default=1.0, help="--simulate: device slower than the scheduler knows")
    p.add_argument("--save-profile", help="--simulate quick: write the measured latency model here")
    args = p.parse_args(argv)
    if args.simulate:
        return simulate(args)
    scale = bench_scale(args)    # before any server runs: never from the server being measured
    server = None if args.url else ServerProcess("--policy", args.policy)
    url = args.url or server.url
    try:
        ready = httpx.get(url + "/ready", timeout=10).json()
        bounds = {"ttft_ms": 500 * scale.ttft, "tpot_ms": 50 * scale.slo}
        emb_ttft_ms = 2000 * scale.ttft
        print(f"server {url}: policy {ready['policy']}; {scale}; real-time bounds {bounds['ttft_ms']:.0f} ms TTFT / "
              f"{bounds['tpot_ms']:.0f} ms TPOT; load average {loadavg()}", flush=True)
        capacity = args.capacity or asyncio.run(measure_capacity(url, args, emb_ttft_ms))
        flood = args.flood_factor * capacity
        print(f"embedding capacity {capacity:.2f}/s ({args.emb_words} words each); flood {flood:.2f}/s; "
              f"load average {loadavg()}", flush=True)
        rows = []
        for _ in range(args.repeat):   # alternating, so a machine whose speed drifts hits both alike
            for name, rate in (("alone", 0.0), ("with flood", flood)):
                out, elapsed = asyncio.run(run(url, args, bounds, emb_ttft_ms, rate))
                rows.append({**summary(name, out, elapsed), "load_average_after": loadavg()})
                print(f"   load average {loadavg()}", flush=True)
        att = {name: sum(r["rt_met"] for r in rows if r["run"] == name) /
               max(1, sum(r["rt_requests"] for r in rows if r["run"] == name)) for name in ("alone", "with flood")}
        print(f"real-time attainment: alone {att['alone']:.3f}, with flood {att['with flood']:.3f} "
              f"({(att['alone'] - att['with flood']) * 100:+.1f} points lost); goal: within 2 points")
        if args.output:
            with open(args.output, "w") as f:
                json.dump({"args": vars(args), "ready": ready, "scale": scale.describe(), "bounds": bounds,
                           "capacity_per_s": capacity, "flood_per_s": flood, "runs": rows}, f, indent=1)
    finally:
        if server is not None:
            server.stop()


def bench_scale(args: argparse.Namespace) -> DeviceScale:
    """The SLO scale: --slo-scale/--ttft-scale, a pinned --profile, or a fresh quick profile of this device taken
    before the server starts. Never the server's own /ready estimate: the server would grade itself."""
    from sliceserve.core.latency import load_profile

    if args.slo_scale is not None:
        return device_scale(None, None, slo_scale=args.slo_scale, ttft_scale=args.ttft_scale)
    path = args.profile
    if path is None:
        path = os.path.join(tempfile.mkdtemp(prefix="flood-"), "idle.json")
        subprocess.run([sys.executable, "-m", "sliceserve", "profile", "--quick", "--output", path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return latency_scale(load_profile(path), ttft_scale=args.ttft_scale)


if __name__ == "__main__":
    main()
