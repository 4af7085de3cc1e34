"""Decode batches over mixed context lengths: one padded attention call vs calls grouped by length.

    python benchmarks/decode_groups.py [--batch 2,4,8,16] [--repeats 7]

For each batch size k, times one decode step of the embedded model (1 torch thread) over contexts spread
evenly from 100 to 600 tokens, (a) in one attention call padded to the longest context (what the runner did
before sliceserve/model/decode_groups.py) and (b) grouped by length as the runner does now; and, as the
reference the latency model assumes, all k at the mean context (350). Median of --repeats steps each.
"""
from __future__ import annotations

import argparse
import math

import torch

from sliceserve.core.kv_cache import KVBlockAllocator
from sliceserve.engine.backend import load_backend
from sliceserve.model.profiler import ProfileGrid, _Synthetic, _time_point, vocab_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="2,4,8,16")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_backend("torch", None, device="cpu", num_threads=1, kv_cache_memory_bytes=512 << 20)
    runner = loaded.runner
    grouped = runner.decode_group_overhead_tokens
    synth = _Synthetic(KVBlockAllocator(loaded.num_kv_blocks, loaded.block_size), vocab_size(loaded), 0)
    grid = ProfileGrid((1,), (1, 2), (1,), repeats=args.repeats, warmup=2)

    def step_ms(contexts: list[int], overhead: float) -> float:
        runner.decode_group_overhead_tokens = overhead
        return 1e3 * _time_point(runner, synth, lambda: ([synth.request(c + 1, c) for c in contexts], {}), grid)

    print("| batch | spread 100-600, one padded call | spread, grouped by length | speed-up | all at 350 |")
    print("|---|---|---|---|---|")
    for k in (int(x) for x in args.batch.split(",")):
        spread = [100 + 500 * i // max(1, k - 1) for i in range(k)]
        one, split, even = step_ms(spread, math.inf), step_ms(spread, grouped), step_ms([350] * k, grouped)
        print(f"| {k} | {one:.1f} ms | {split:.1f} ms | {one / split:.2f}x | {even:.1f} ms |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
