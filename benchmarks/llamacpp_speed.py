"""Decode speed of the llama.cpp executor next to llama-cpp-python's own generation and the PyTorch executor.

    PYTHONPATH=. python benchmarks/llamacpp_speed.py [--batch-sizes 1,4,16] [--steps 16] [--repeats 3]

One run, three sides, same embedded model (SmolLM2-135M-Instruct: the Q4_1 GGUF for llama.cpp, its fp32
dequantisation for PyTorch), one thread each (llama.cpp n_threads=1, torch.set_num_threads(1)); these VMs
have 2 shared vCPUs. Each row alternates the sides `--repeats` times and prints medians of wall and
process-CPU tokens/s (style of sliceserve/model/bench_speed.py); prompts are prefilled outside the clock.
llama-cpp-python has no batched generation: its column at batch B generates B sequences one after another.
Timings vary between runs on a shared VM: run it when `uptime` shows a load below ~1.5, compare within a run.
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch

from sliceserve.model.bench_speed import llama_cpp_decode, ours_decode


def _medians(sides: dict, repeats: int) -> dict[str, tuple[float, float]]:
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(repeats):          # alternate, so a burst of contention hits every side
        for name, fn in sides.items():
            runs[name].append(fn())
    return {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for n, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--steps", type=int, default=16, help="timed decode steps per sequence")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    import llama_cpp

    from sliceserve.engine.backend import load_backend
    from sliceserve.model.loader import default_model_path

    torch.set_num_threads(1)
    lcpp = load_backend("llamacpp", num_threads=1, max_num_seqs=max(batches), max_model_len=256)
    pt = load_backend("torch", num_threads=1, kv_cache_memory_bytes=256 << 20)
    ref = llama_cpp.Llama(default_model_path(), n_ctx=256, n_threads=1, n_threads_batch=1, flash_attn=True,
                          verbose=False)
    vocab = min(lcpp.runner.vocab_size, pt.runner.vocab_size)
    sides = {"llama.cpp own": lambda b: llama_cpp_decode(ref, b, args.prompt_len, args.steps, vocab),
             "llamacpp executor": lambda b: ours_decode(lcpp, b, args.prompt_len, args.steps),
             "torch executor": lambda b: ours_decode(pt, b, args.prompt_len, args.steps)}
    for fn in sides.values():
        fn(1)                          # warm-up: first-call allocations
    print(f"decode tokens/s, SmolLM2-135M-Instruct, 1 thread per side, prompt {args.prompt_len}, {args.steps} "
          f"timed steps, median of {args.repeats} alternating runs, {os.cpu_count()} shared vCPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    head = "".join(f"{n:>20}" for n in sides)
    print(f"{'wall tok/s':<12}{head}{'exec/own':>10}   | CPU tok/s: {head}{'exec/own':>10}")
    for b in batches:
        m = _medians({n: (lambda fn=fn: fn(b)) for n, fn in sides.items()}, args.repeats)
        wall = "".join(f"{m[n][0]:>20.1f}" for n in sides)
        cpu = "".join(f"{m[n][1]:>20.1f}" for n in sides)
        own, ex = m["llama.cpp own"], m["llamacpp executor"]
        print(f"{'batch ' + str(b):<12}{wall}{ex[0] / own[0]:>10.2f}   |            {cpu}{ex[1] / own[1]:>10.2f}",
              flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
