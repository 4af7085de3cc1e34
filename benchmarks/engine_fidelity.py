"""Simulator fidelity: does `simulate --profile` (fitted here) predict what `bench --engine local` measures?

    python benchmarks/engine_fidelity.py [--workdir DIR] [--request-rate 0.3] [--duration 20]

End to end through the CLI: (1) `sliceserve profile` fits a LatencyModel on this machine; (2) `sliceserve
bench --engine local` runs the workload on the real model, with that profile (so the SLO scale is derived
from it, as bench does); (3) `sliceserve simulate` runs the same workload (same seed, rate, duration, SLO
scale and scheduler limits as the local run) on the profile; (4) compare:
- iteration time: every iteration the local run measured (its shape: decodes, mean decode context,
  prefill tokens) is predicted by the fitted LatencyModel; mean absolute percentage error overall, per
  policy and per iteration kind;
- SLO attainment per policy, local vs simulated, in percentage points.
Also prints this process's CPU-time share during the local run (CPU seconds / wall seconds of the child):
well under 1.0 on a one-thread engine means other processes held the CPU and stretched iterations.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sliceserve.core.latency import IterationSample, LatencyModel


def _cli(args: list[str]) -> tuple[float, float]:
    """Run `python -m sliceserve ARGS`; returns (wall seconds, child CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    print("$ sliceserve " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "sliceserve", *args], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - t0, cpu


def iteration_errors(model: LatencyModel, iterations: list[list[float]]) -> dict[str, list[float]]:
    """|predicted - measured| / measured per iteration, grouped by kind (decode / prefill / mixed)."""
    out: dict[str, list[float]] = {"decode": [], "prefill": [], "mixed": []}
    for k, ctx, n, seconds, *longest in iterations:   # recorded runs before the longest context: 4 fields
        if seconds <= 0:
            continue
        kind = "mixed" if k and n else ("decode" if k else "prefill")
        predicted = model.iteration_time(int(k), ctx, int(n), longest[0] if longest else None)
        out[kind].append(abs(predicted - seconds) / seconds)
    return out


def jitter_floor(iterations: list[list[float]]) -> list[float]:
    """|this - previous| / this over decode-only iterations whose previous iteration had the same batch size and
    a context within 2 %: how much identical work varies from one step to the next on this machine. No
    latency model, however exact, predicts single iterations much better than this."""
    last: dict[int, tuple[float, float]] = {}
    out = []
    for k, ctx, n, seconds, *_ in iterations:
        if n or not k or seconds <= 0:
            continue
        prev = last.get(int(k))
        if prev is not None and abs(prev[0] - ctx) <= 0.02 * max(ctx, 1.0):
            out.append(abs(prev[1] - seconds) / seconds)
        last[int(k)] = (ctx, seconds)
    return out


def _pct(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.1f}%" if xs else "-"


def compare(profile: Path, bench: dict, sim: dict) -> str:
    model = LatencyModel.load(profile)
    lines = ["| policy | iterations | MAPE all | decode-only | prefill-only | mixed | attainment local | "
             "attainment sim | diff (points) |", "|---|---|---|---|---|---|---|---|---|"]
    everything: list[float] = []
    jitter: list[float] = []
    for policy, res in bench["results"].items():
        jitter += jitter_floor(res["iterations"])
        errs = iteration_errors(model, res["iterations"])
        flat = [e for v in errs.values() for e in v]
        everything += flat
        local = res["summary"]["slo_attainment"]
        simulated = sim["results"][policy]["summary"]["slo_attainment"]
        lines.append(f"| {policy} | {len(flat)} | {_pct(flat)} | {_pct(errs['decode'])} | {_pct(errs['prefill'])} | "
                     f"{_pct(errs['mixed'])} | {100 * local:.1f}% | {100 * simulated:.1f}% | "
                     f"{100 * (simulated - local):+.1f} |")
    lines.append(f"\nall policies: iteration-time MAPE {_pct(everything)} over {len(everything)} iterations")
    lines.append(f"jitter floor (step-to-step change of identical decode steps, {len(jitter)} pairs): mean "
                 f"{_pct(jitter)}, median {100 * statistics.median(jitter) if jitter else 0:.1f}%")
    return "\n".join(lines)


def _simulate(bench: dict, profile: Path, sim_out: Path) -> dict:
    """The simulate step: the local run's workload, scheduler limits and SLO scales, on `profile`."""
    cfg = bench["config"]
    sets = [f"--set={k}={v}" for k, v in cfg["scheduler"].items()]
    _cli(["simulate", "--policy", ",".join(cfg["policies"]), "--workload", cfg["workload"]["name"],
          "--request-rate", repr(cfg["request_rate"]), "--duration", repr(cfg["duration_s"]),
          "--seed", str(cfg["seed"]), "--profile", str(profile), "--no-progress", "--slo-scale",
          repr(cfg["slo_scale"]), "--ttft-scale", repr(cfg["ttft_scale"]), *sets, "--output", str(sim_out)])
    return json.loads(sim_out.read_text())


def reanalyse(work: Path, ctx_buckets: str | None) -> int:
    data = json.loads((work / "profile.json").read_text())
    samples = [IterationSample(**s) for s in data["samples"]]
    buckets = [int(x) for x in ctx_buckets.split(",")] if ctx_buckets else data.get("ctx_buckets")
    model = LatencyModel.fit(samples, name=data.get("name", "refit"), ctx_buckets=buckets,
                             notes=f"refit of {work / 'profile.json'}'s {len(samples)} samples")
    refit = work / "profile-refit.json"
    model.save(refit, {"device": data.get("device", {}), "samples": data["samples"]})
    bench = json.loads((work / "bench.json").read_text())
    sim = _simulate(bench, refit, work / "sim-refit.json")
    print(f"\nrecorded run {work}: profile refitted with this code ({refit}), simulated again\n")
    print(compare(refit, bench, sim))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="fidelity-out", help="where profile.json, bench.json, sim.json go")
    p.add_argument("--policy", default="slice,vllm,orca,fastserve")
    p.add_argument("--workload", default="edge-mix")
    p.add_argument("--request-rate", default="0.3")
    p.add_argument("--duration", default="20")
    p.add_argument("--seed", default="0")
    p.add_argument("--max-batch", default="16", help="profile: largest decode batch")
    p.add_argument("--contexts", default="64,256,1024", help="profile: decode contexts")
    p.add_argument("--chunks", default="32,64,128,256,512", help="profile: prefill chunk sizes")
    p.add_argument("--repeats", default="5", help="profile: timed runs per point (median kept)")
    p.add_argument("--kv-cache-memory", default=str(256 << 20), help="bytes of KV cache, for both runs")
    p.add_argument("--reuse-profile", action="store_true", help="keep an existing workdir/profile.json")
    p.add_argument("--device", default="cpu", help="torch device of the profile and the local run")
    p.add_argument("--no-cuda-graphs", action="store_true", help="CUDA: eager decode steps in both runs")
    p.add_argument("--reanalyse", action="store_true",
                   help="measure nothing: refit the workdir's recorded profile samples with this code's latency "
                        "model, simulate again and compare with the recorded local run (e.g. a GPU run, on a "
                        "machine without one)")
    p.add_argument("--ctx-buckets", default=None,
                   help="with --reanalyse: the runner's padded decode lengths (CUDA graphs), for profiles "
                        "recorded before profiles stored them")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    profile, bench_out, sim_out = work / "profile.json", work / "bench.json", work / "sim.json"
    if args.reanalyse:
        return reanalyse(work, args.ctx_buckets)
    load0 = os.getloadavg()[0]
    eager = ["--no-cuda-graphs"] if args.no_cuda_graphs else []
    if not (args.reuse_profile and profile.exists()):
        _cli(["profile", "--output", str(profile), "--max-batch", args.max_batch, "--contexts", args.contexts,
              "--chunks", args.chunks, "--repeats", args.repeats, "--kv-cache-memory", args.kv_cache_memory, "--device", args.device, *eager])
    common = ["--policy", args.policy, "--workload", args.workload, "--request-rate", args.request_rate,
              "--duration", args.duration, "--seed", args.seed, "--profile", str(profile), "--no-progress"]
    wall, cpu = _cli(["bench", "--engine", "local", *common, "--kv-cache-memory", args.kv_cache_memory,
                      "--device", args.device, *eager, "--output", str(bench_out)])
    bench = json.loads(bench_out.read_text())
    cfg = bench["config"]
    # The simulator gets exactly the local run's workload, scheduler limits and SLO scales.
    sim = _simulate(bench, profile, sim_out)
    print(f"\nworkload {args.workload}, rate {args.request_rate}/s, duration {args.duration} s, seed {args.seed}, "
          f"SLO scale {cfg['slo_scale']:.3g}, TTFT scale {cfg['ttft_scale']:.3g} (derived from the profile), profile {profile}")
    print(f"profile notes: {LatencyModel.load(profile).notes}")
    print(f"local run: {wall:.0f} s wall, {cpu:.0f} s CPU in the child (CPU/wall {cpu / wall:.2f}); load average "
          f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end, {os.cpu_count()} CPUs\n")
    print(compare(profile, bench, sim))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
