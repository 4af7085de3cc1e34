"""Starts the engine N times, each in a fresh process, as `sliceserve serve --memory-limit LIMIT` starts it
(the weights loaded under the memory target, then the start-up latency calibration, then a short generation),
and counts the clean starts. Before issue 17 about one 1GiB start in five died in the calibration with
`ChooseQuantizationParams: min <= max` (sliceserve/model/profiling_view.py says why).

    PYTHONPATH=. .venv/bin/python benchmarks/clean_starts.py [--starts 20] [--limit 1GiB]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def child(limit_text: str) -> None:
    import torch

    torch.set_num_threads(1)
    from sliceserve.engine.llm import LLM
    from sliceserve.model.loader import load_model
    from sliceserve.request import SamplingParams
    from sliceserve.slo import parse_size

    limit = parse_size(limit_text)
    loaded = load_model(None, num_threads=1, memory_limit_bytes=int(limit), max_model_len=1024)
    llm = LLM(loaded, policy="slice")   # no profile: the start-up calibration, as the server runs it
    out = llm.generate(["What is the capital of France?"], SamplingParams(max_tokens=8, ignore_eos=True))
    print(f"ok {loaded.representation} l(1)={llm.latency.decode_time(1) * 1e3:.1f}ms {out[0].text!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--limit", default="1GiB")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    print(f"{args.starts} starts under memory <= {args.limit}, load average {os.getloadavg()[0]:.2f}", flush=True)
    clean = 0
    for i in range(args.starts):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", args.limit], capture_output=True, text=True)
        ok = proc.returncode == 0 and proc.stdout.startswith("ok")
        clean += ok
        last = (proc.stdout.strip() if ok else proc.stderr.strip()).splitlines()[-1:] or ["(no output)"]
        print(f"start {i + 1:>2}: {'clean' if ok else 'FAILED'} in {time.perf_counter() - t:.1f} s  {last[0][:120]}",
              flush=True)
    print(f"clean starts: {clean}/{args.starts}; load average at the end {os.getloadavg()[0]:.2f}")
    return 0 if clean == args.starts else 1


if __name__ == "__main__":
    raise SystemExit(main())
