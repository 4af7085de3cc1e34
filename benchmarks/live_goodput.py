"""The CPU default server against the fp32 server, live, at the same request rate: SLO attainment and goodput
side by side (issue 17's live criterion).

    .venv/bin/python benchmarks/live_goodput.py [--request-rate 0.5] [--duration 60] [--slo-scale 2]
                                                [--ttft-scale 10] [--seed 0] [--workload edge-mix]

Each side is a real `sliceserve serve --num-threads 1` (`--dtype auto`, the int8 default, then `--dtype float32`),
started alone and stopped before the other starts, driven by `sliceserve bench --url` with the same workload,
seed (so the same arrivals and prompts) and SLO scales; the scales are given, never taken from the server being
measured. Load stays bounded: one server at a time, open-loop arrivals for `--duration` seconds. The load
average is printed at each start and at the end; on a shared machine compare only sides of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from sliceserve.bench.spawn import ServerProcess

COLUMNS = [("slo_attainment", "SLO att.", "{:.3f}"), ("utility_attainment", "utility", "{:.3f}"),
           ("goodput_rps", "goodput/s", "{:.3f}"), ("num_rejected", "rejected", "{:d}"),
           ("mean_ttft_s", "mean TTFT s", "{:.2f}"), ("p99_ttft_s", "p99 TTFT s", "{:.2f}"),
           ("mean_tpot_s", "mean TPOT ms", "{:.1f}"), ("p99_tpot_s", "p99 TPOT ms", "{:.1f}"),
           ("throughput_tok_s", "tok/s", "{:.1f}")]


def _side(dtype: str, args, out: Path) -> tuple[dict, str]:
    print(f"{dtype}: starting server, load average {os.getloadavg()[0]:.2f}", flush=True)
    with ServerProcess("--num-threads", "1", "--dtype", dtype) as server:
        rep = httpx.get(server.url + "/v1/status", timeout=10).json().get("representation", "?")
        print(f"{dtype}: ready ({rep}), load average {os.getloadavg()[0]:.2f}", flush=True)
        subprocess.run([sys.executable, "-m", "sliceserve", "bench", "--url", server.url,
                        "--workload", args.workload, "--request-rate", str(args.request_rate), "--duration",
                        str(args.duration), "--slo-scale", str(args.slo_scale), "--ttft-scale", str(args.ttft_scale),
                        "--seed", str(args.seed), "--no-progress", "--output", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    results = json.loads(out.read_text())["results"]
    return next(iter(results.values()))["summary"], rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="edge-mix")
    p.add_argument("--request-rate", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--slo-scale", type=float, default=2.0)
    p.add_argument("--ttft-scale", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("auto", "float32"):
            summary, rep = _side(dtype, args, Path(tmp) / f"{dtype}.json")
            rows.append((f"--dtype {dtype} ({rep})", summary))
    print(f"{args.workload} at {args.request_rate} req/s for {args.duration:.0f} s, seed {args.seed}, SLO scale "
          f"{args.slo_scale}, TTFT scale {args.ttft_scale}; load average at the end {os.getloadavg()[0]:.2f}")
    print(f"{'server':<28}" + "".join(f"{label:>13}" for _, label, _ in COLUMNS) + f"{'requests':>10}")
    for name, s in rows:
        cells = [fmt.format(s[key] * 1000 if key.endswith("tpot_s") else s[key]) for key, _, fmt in COLUMNS]
        print(f"{name:<28}" + "".join(f"{c:>13}" for c in cells) + f"{s['num_requests']:>10}")
    base = rows[1][1]["goodput_rps"]
    ratio = f"{rows[0][1]['goodput_rps'] / base:.2f}x" if base > 0 else "inf (fp32 met no request's SLO)"
    print(f"goodput, default / fp32: {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
