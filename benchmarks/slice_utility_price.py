"""What SLICE's real-time priority costs in count goodput on the Azure conversation trace (issue 21).

On the trace (prompts ~1,155 tokens, outputs ~211, classes drawn by edge-mix's shares) SLICE meets fewer
requests per second than SCORPIO from 1 req/s on, while meeting 2-40x more real-time ones. This runs, on
the same arrivals:
- `slice`: SLICE as shipped (real-time utility 100, the others 1: the edge-mix preset);
- `slice, utility 1`: the same policy with every class worth 1 (what a count-goodput objective assumes);
- `scorpio`: the strongest peer on goodput;
and prints, per rate (seed means), requests meeting their SLO per second, real-time attainment and
utility-weighted attainment (with real-time worth 100 for every variant). If SLICE with equal utilities out-serves SCORPIO, the goodput gap is the
price SLICE pays for the utilities it is given, not capacity its machinery wastes.

    .venv/bin/python benchmarks/slice_utility_price.py [--rates 0.6:2:0.2] [--seeds 2,3,4] [--duration 300]

Each variant runs `sliceserve simulate --sweep-rate` in a child process (the equal-utility child swaps the
edge-mix preset's utilities before the CLI reads it); at most two children at a time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TRACE = "/work/shared/data/azure-llm-2023/conv.csv"
TRACE_MIX = "realtime=0.2,nrt-100=0.3,nrt-120=0.3,nrt-250=0.2"
# (label, policy, every class worth 1?)
VARIANTS = (("slice", "slice", False), ("slice, utility 1", "slice", True), ("scorpio", "scorpio", False))


def _child(argv: list[str]) -> int:
    """`sliceserve simulate` with the edge-mix preset's utilities all set to 1."""
    from sliceserve.slo import SLOClass
    from sliceserve.workload import presets
    from sliceserve.workload.spec import ClassMix

    presets.PRESETS["edge-mix"] = tuple(ClassMix(SLOClass(m.slo_class.name, m.slo_class.slo, 1.0), m.weight,
                                                 m.prompt, m.output) for m in presets.PRESETS["edge-mix"])
    from sliceserve.cli import main
    return main(["simulate", *argv])


def _run(policy: str, equal: bool, rates: str, seed: int, duration: float, trace: str, out: Path) -> list[dict]:
    args = ["--policy", policy, "--workload", "edge-mix", "--trace", trace, "--trace-mix", TRACE_MIX,
            "--profile", "paper-4060ti", "--sweep-rate", rates, "--duration", f"{duration:g}", "--seed", str(seed),
            "--output", str(out), "--no-progress"]
    cmd = [sys.executable, __file__, "--child", *args] if equal else [sys.executable, "-m", "sliceserve", "simulate", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["sweep"]


def _weighted(per_class: dict) -> float:
    """Utility-weighted attainment with the edge-mix utilities (real-time 100, others 1) for every variant,
    the equal-utility one included (its own run weighs every class 1)."""
    weight = {name: 100.0 if name == "realtime" else 1.0 for name in per_class}
    total = sum(weight[c] * v["num_requests"] for c, v in per_class.items())
    return sum(weight[c] * v["num_met"] for c, v in per_class.items()) / total if total else float("nan")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="0.6:2:0.2")
    ap.add_argument("--seeds", default="2,3,4")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--trace", default=TRACE)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="utility-price-") as tmp:
        jobs = [(label, policy, equal, seed, Path(tmp) / f"{i}-{seed}.json")
                for i, (label, policy, equal) in enumerate(VARIANTS) for seed in seeds]
        with ThreadPoolExecutor(max_workers=2) as pool:
            sweeps = list(pool.map(lambda j: _run(j[1], j[2], args.rates, j[3], args.duration, args.trace, j[4]), jobs))
    rows: dict[tuple[float, str], list[tuple[float, float, float]]] = {}
    for (label, policy, _, _, _), sweep in zip(jobs, sweeps):
        for point in sweep:
            res = point["results"][policy]
            rt = res["per_class"].get("realtime", {}).get("slo_attainment", float("nan"))
            rows.setdefault((point["rate"], label), []).append(
                (res["summary"]["num_met"] / args.duration, rt, _weighted(res["per_class"])))
    print(f"Azure conversation trace, paper-4060ti, {args.duration:g} s, seeds {args.seeds} (seed means)")
    print(f"{'rate':>5}  {'variant':18s} {'met/s':>6} {'vs scorpio':>10} {'realtime':>8} {'util-attain':>11}")
    for rate in sorted({r for r, _ in rows}):
        ref = statistics.mean(v[0] for v in rows[(rate, "scorpio")])
        for label, _, _ in VARIANTS:
            vals = rows[(rate, label)]
            met = statistics.mean(v[0] for v in vals)
            print(f"{rate:5g}  {label:18s} {met:6.3f} {met / ref:9.2f}x {statistics.mean(v[1] for v in vals):8.3f} "
                  f"{statistics.mean(v[2] for v in vals):11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
