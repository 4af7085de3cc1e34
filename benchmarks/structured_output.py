"""Structured output under load: the edge mix on the real engine with 0% and 30% of requests decoded
under a grammar (sliceserve.bench.constrained), run back to back on identical arrivals, alternating
(0, 30, 0, 30, ...) so machine-load drift hits both. Prints per-class SLO attainment and throughput.

    .venv/bin/python benchmarks/structured_output.py --rate 0.3 --duration 40 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--policy", default="slice")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from sliceserve.bench.local import LocalSettings, resolve, run_policy, warm_up
    from sliceserve.engine.backend import load_backend
    from sliceserve.workload import generate, get_preset

    loaded = load_backend("torch", max_model_len=1024, num_threads=1)
    latency, scale = resolve(loaded, None, None)
    workload = generate("edge-mix", args.rate, args.duration, args.seed, 1.0,
                        mix=get_preset("edge-mix", scale.slo, scale.ttft))
    print(f"{len(workload.specs)} requests, edge-mix at {args.rate}/s for {args.duration:g} s, {scale}, "
          f"l(1) = {latency.decode_time(1) * 1e3:.0f} ms, policy {args.policy}; "
          f"loadavg {os.getloadavg()[0]:.2f}", flush=True)
    warm_up(loaded)
    rows = []
    for rep in range(args.repeats):
        for frac in (0.0, args.fraction):
            settings = LocalSettings(seed=args.seed, include_requests=False, progress=False,
                                     max_time_s=4 * args.duration + 30, constrained_fraction=frac)
            t0 = time.time()
            res = run_policy(loaded, args.policy, workload, latency, settings)
            s = res["summary"]
            per = {c: v["slo_attainment"] for c, v in res["per_class"].items()}
            rows.append((rep, frac, s, per, time.time() - t0, os.getloadavg()[0]))
            print(f"rep {rep} constrained {frac:.0%}: attainment {s['slo_attainment']:.3f} "
                  f"per class {', '.join(f'{c} {v:.3f}' for c, v in sorted(per.items()) if v is not None)} | "
                  f"{s['throughput_tok_s']:.2f} tok/s, goodput {s['goodput_rps']:.3f} req/s, finished {s['num_finished']}/{s['num_requests']}, errors {s['num_errored']} | "
                  f"wall {time.time() - t0:.0f} s, loadavg {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
