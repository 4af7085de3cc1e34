"""CPU speed of the default representation (int8 dynamic) next to fp32 and llama.cpp, side by side in one run.

    PYTHONPATH=. python benchmarks/cpu_speed.py [--batch-sizes 1,4,8,16] [--steps 16] [--repeats 3]
                                                [--prefill 256] [--threads 1] [--no-llamacpp]
    PYTHONPATH=. python benchmarks/cpu_speed.py --thread-counts 1,2     # the default at 1 vs 2 threads

Sides, same embedded model (SmolLM2-135M-Instruct), `--threads` each (llama.cpp n_threads, torch threads):
- `default`: the torch engine as `load_model()` gives it on CPU (int8 dynamic, model/quant/representation.py);
- `fp32`: the same engine with `dtype="float32"`, the reference path (the CPU default before issue 17);
- `llama.cpp own`: llama-cpp-python's `Llama.generate` on the Q4_1 GGUF (no batched generation: at batch B it
  generates B sequences one after another);
- `llamacpp exec`: this project's llama.cpp executor, a batch per `llama_decode` (optional extra `llamacpp`).
Decode rows prefill a `--prompt-len` prompt per sequence outside the clock and time `--steps` steps; the prefill
row times one `--prefill`-token prompt. Each row alternates the sides `--repeats` times (so a burst of
contention from other processes hits every side) and prints medians of wall and process-CPU tokens/s, then
the ratios the goals name. Timings on a shared VM vary between runs: compare within a run, print the load.
"""
from __future__ import annotations

import argparse
import os
import statistics
from typing import Callable

import torch

from sliceserve.model.bench_speed import _Clock, _int_list, _requests, llama_cpp_decode, ours_decode, ours_prefill


def own_prefill(ref, prompt_len: int, vocab: int) -> tuple[float, float]:
    tokens = _requests(1, prompt_len, vocab, 1)[0].prompt_token_ids
    ref.reset()
    with _Clock() as clock:
        ref.eval(tokens)
    return prompt_len / clock.wall, prompt_len / clock.cpu


Side = Callable[[], tuple[float, float]]


def medians(sides: dict[str, Side], repeats: int) -> dict[str, tuple[float, float]]:
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for fn in sides.values():         # one untimed run each: first-call allocations, TorchScript's optimising runs
        fn()
    for _ in range(repeats):          # alternate, so a burst of contention hits every side
        for name, fn in sides.items():
            runs[name].append(fn())
    return {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for n, v in runs.items()}


def _print_row(label: str, m: dict[str, tuple[float, float]], names: list[str]) -> None:
    wall = "".join(f"{m[n][0]:>15.1f}" if n in m else f"{'-':>15}" for n in names)
    cpu = "".join(f"{m[n][1]:>15.1f}" if n in m else f"{'-':>15}" for n in names)
    print(f"{label:<16}{wall}   |{cpu}", flush=True)


def _ratio(m: dict, a: str, b: str) -> str:
    if a not in m or b not in m:
        return "n/a"
    return f"{m[a][0] / m[b][0]:.2f}x wall, {m[a][1] / m[b][1]:.2f}x CPU"


def compare(args, batches: list[int]) -> None:
    from sliceserve.engine.backend import load_backend

    kv = 512 << 20
    loaded = {"default": load_backend("torch", num_threads=args.threads, kv_cache_memory_bytes=kv),
              "fp32": load_backend("torch", dtype="float32", num_threads=args.threads, kv_cache_memory_bytes=kv)}
    ref = None
    if args.llamacpp:
        import llama_cpp

        from sliceserve.model.loader import default_model_path

        loaded["llamacpp exec"] = load_backend("llamacpp", num_threads=args.threads, max_num_seqs=max(batches),
                                               max_model_len=max(512, args.prefill + 1))
        ref = llama_cpp.Llama(default_model_path(), n_ctx=max(512, args.prefill + 1), n_threads=args.threads,
                              n_threads_batch=args.threads, flash_attn=True, verbose=False)
    torch.set_num_threads(args.threads)
    vocab = min(x.runner.vocab_size for x in loaded.values())
    names = ["default", "fp32"] + (["llama.cpp own", "llamacpp exec"] if ref is not None else [])
    print(f"SmolLM2-135M-Instruct, {args.threads} thread(s) per side, representation of default: "
          f"{loaded['default'].representation}; decode: prompt {args.prompt_len}, {args.steps} timed steps; "
          f"median of {args.repeats} alternating runs; {os.cpu_count()} vCPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    head = "".join(f"{n:>15}" for n in names)
    print(f"{'tok/s (wall)':<16}{head}   |{head.replace('  default', '  CPU:default', 1)}")
    rows: dict[str, dict] = {}
    for b in batches:
        sides: dict[str, Side] = {n: (lambda L=L: ours_decode(L, b, args.prompt_len, args.steps))
                                  for n, L in loaded.items()}
        if ref is not None:
            sides["llama.cpp own"] = lambda: llama_cpp_decode(ref, b, args.prompt_len, args.steps, vocab)
        rows[f"decode b{b}"] = m = medians(sides, args.repeats)
        _print_row(f"decode batch {b}", m, names)
    sides = {n: (lambda L=L: ours_prefill(L, args.prefill)) for n, L in loaded.items()}
    if ref is not None:
        sides["llama.cpp own"] = lambda: own_prefill(ref, args.prefill, vocab)
    rows["prefill"] = m = medians(sides, args.repeats)
    _print_row(f"prefill {args.prefill}", m, names)
    print("ratios (goal):")
    for b, other, goal in [(1, "llama.cpp own", "0.8"), (4, "llamacpp exec", "1.5"), (4, "llama.cpp own", "1.5"),
                           (16, "llamacpp exec", "1.5"), (16, "llama.cpp own", "1.5"), (1, "fp32", "2.5"),
                           (8, "fp32", "2.5")]:
        if f"decode b{b}" in rows:
            print(f"  decode batch {b:>2}: default / {other:<14} {_ratio(rows[f'decode b{b}'], 'default', other)}"
                  f"   (goal >= {goal}x)")
    for other in ("llama.cpp own", "llamacpp exec", "fp32"):
        print(f"  prefill {args.prefill}: default / {other:<14} {_ratio(rows['prefill'], 'default', other)}"
              f"   (goal >= 1x llama.cpp)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def thread_counts(args, batches: list[int], counts: list[int]) -> None:
    """The default representation at each thread count, alternating within each row."""
    from sliceserve.engine.backend import load_backend

    loaded = load_backend("torch", num_threads=counts[0], kv_cache_memory_bytes=512 << 20)

    def at(n: int, fn: Side) -> Side:
        def run() -> tuple[float, float]:
            torch.set_num_threads(n)
            return fn()
        return run

    print(f"default ({loaded.representation}) at threads {counts}; median of {args.repeats} alternating runs; "
          f"{os.cpu_count()} vCPUs, load average {os.getloadavg()[0]:.2f}")
    names = [f"{n} thread(s)" for n in counts]
    head = "".join(f"{n:>15}" for n in names)
    print(f"{'tok/s (wall)':<16}{head}   |{head}  (CPU tok/s: process CPU time, all threads)")
    for b in batches:
        m = medians({f"{n} thread(s)": at(n, lambda: ours_decode(loaded, b, args.prompt_len, args.steps))
                     for n in counts}, args.repeats)
        _print_row(f"decode batch {b}", m, names)
    m = medians({f"{n} thread(s)": at(n, lambda: ours_prefill(loaded, args.prefill)) for n in counts}, args.repeats)
    _print_row(f"prefill {args.prefill}", m, names)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,4,8,16")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--steps", type=int, default=16, help="timed decode steps per sequence")
    p.add_argument("--prefill", type=int, default=256, help="prompt tokens of the prefill row")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="threads per side")
    p.add_argument("--no-llamacpp", dest="llamacpp", action="store_false", help="torch sides only")
    p.add_argument("--thread-counts", default=None, help="e.g. 1,2: the default side at each count instead")
    args = p.parse_args(argv)
    batches = _int_list(args.batch_sizes)
    if args.thread_counts:
        thread_counts(args, batches, _int_list(args.thread_counts))
    else:
        compare(args, batches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
