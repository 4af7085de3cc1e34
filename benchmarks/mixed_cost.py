"""What a prompt chunk costs, alone and beside decodes, against the latency model (issue 16).

The live model had missed prefill-bearing iterations (median error 10.5-11 %) and its online prefill factor
drifted to 1.24x a fresh profile under mixed load. This times, on the embedded model (default CPU settings, one
torch thread), the shapes the server runs: prompt chunks of 32-512 tokens after 0-1536 cached tokens (a long
prompt's later chunks), decode-only batches, and chunks beside 1-8 decodes (mixed iterations), each the median of
`--repeats` timings taken round-robin (a load spike then hits every shape, not one). Printed per shape: measured,
the start-up quick estimate's prediction (`sliceserve.model.profiler.quick_estimate`) and their ratio.

    python benchmarks/mixed_cost.py --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch

from sliceserve.core.kv_cache import KVBlockAllocator
from sliceserve.executor_api import profiling_executor
from sliceserve.model.loader import load_model
from sliceserve.model.profiler import _Synthetic, quick_estimate, spread_contexts, vocab_size

# (chunk tokens, cached prefix, decodes beside it, their mean context)
SHAPES = ([(n, 0, 0, 0) for n in (32, 128, 256, 512)] + [(512, p, 0, 0) for p in (512, 1536)]
          + [(256, 768, 0, 0), (128, 512, 0, 0)] + [(0, 0, k, 300) for k in (1, 4, 8)]
          + [(n, 0, k, 300) for n in (32, 128, 512) for k in (1, 8)]
          + [(512, 1024, 4, 300), (256, 768, 4, 300), (128, 512, 4, 300)])


def _load() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = load_model()
    runner = profiling_executor(loaded)
    synth = _Synthetic(KVBlockAllocator(loaded.num_kv_blocks, loaded.block_size), vocab_size(loaded), 0)

    def once(n: int, prefix: int, k: int, ctx: int) -> float:
        reqs, prefill = [synth.request(c + 1, c) for c in (spread_contexts(k, ctx, 0.5) if k else [])], {}
        if n:
            chunk = synth.request(prefix + n, prefix)
            reqs.append(chunk)
            prefill[chunk.req_id] = n
        out = runner.execute(synth.output(reqs, prefill))
        synth.release(reqs)
        return out.elapsed_s

    print(f"quick estimate ... ({_load()})", flush=True)
    model = quick_estimate(loaded)
    print(f"p(n) = {model.prefill_base_s * 1e3:.1f} ms + {model.prefill_per_token_s * 1e3:.3f} ms/token + "
          f"{model.prefill_attn_s * 1e9:.0f} ns/attention pair; l(1) {model.decode_time(1) * 1e3:.1f} ms ({_load()})")
    for shape in SHAPES:   # untimed: first-shape costs (allocations, scripted-step specialisation)
        once(*shape)
    times: dict[tuple, list[float]] = {s: [] for s in SHAPES}
    for _ in range(args.repeats):
        for shape in SHAPES:
            times[shape].append(once(*shape))
    print(f"\n| chunk | prefix | decodes (ctx) | measured ms | predicted ms | pred/meas |\n|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {"prefill": [], "decode": [], "mixed": []}
    for (n, prefix, k, ctx), ts in times.items():
        meas = statistics.median(ts)
        pred = model.iteration_time(k, ctx, n, None, prefix)
        ratios["prefill" if not k else "decode" if not n else "mixed"].append(pred / meas)
        print(f"| {n} | {prefix} | {k} ({ctx}) | {meas * 1e3:.1f} | {pred * 1e3:.1f} | {pred / meas:.2f} |")
    print()
    for kind, rs in ratios.items():
        err = np.abs(np.array(rs) - 1)
        print(f"{kind}: median |pred/meas - 1| {np.median(err):.1%}, max {err.max():.1%} over {len(rs)} shapes")
    print(_load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
