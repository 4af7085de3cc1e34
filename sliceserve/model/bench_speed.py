"""Speed of the model runner next to transformers' `generate` on the same model, dtype and threads.

    python -m sliceserve.model.bench_speed [--model PATH] [--batch-sizes 1,4,16,32] [--threads 1,2]
                                           [--device cuda --dtype bfloat16]

Prints decode tokens/s per batch size and prefill tokens/s for both, in one run (timings here vary up to
2x between runs, DESIGN.md, so only same-run comparisons mean anything). Each row alternates the two
sides `--repeats` times and prints medians, by wall clock and by this process's CPU time (the latter
excludes time other processes hold the CPU: on a shared 2-CPU VM the wall figures swing with their load).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sliceserve.core.outputs import SchedulerOutput
from sliceserve.request import Request, SamplingParams


def _requests(batch: int, prompt_len: int, vocab: int, max_tokens: int) -> list[Request]:
    gen = torch.Generator().manual_seed(0)
    return [Request(f"b{i}", torch.randint(100, vocab, (prompt_len,), generator=gen).tolist(),
                    SamplingParams(max_tokens=max_tokens, ignore_eos=True), arrival_s=0.0) for i in range(batch)]


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work is asynchronous: the clock must wait for it


class _Clock:
    """Wall and CPU seconds of a block. The CPU time (this process, torch on the calling thread) leaves out
    the time other processes hold the CPU, so its ratio stays meaningful on a contended machine (on a GPU
    only the wall figures mean anything)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "_Clock":
        _sync()
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        _sync()
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def ours_decode(loaded, batch: int, prompt_len: int, steps: int) -> tuple[float, float]:
    """Decode tokens/s (wall, CPU): prefill outside the clock, then `steps` decode iterations of the batch."""
    runner, bs = loaded.runner, loaded.block_size
    reqs = _requests(batch, prompt_len, loaded.runner.vocab_size, steps + 1)
    per_req = -(-(prompt_len + steps + 1) // bs)
    if per_req * batch > loaded.num_kv_blocks:
        raise ValueError(f"KV cache too small for batch {batch}: raise --kv-cache-mib")
    tables = {r.req_id: list(range(i * per_req, (i + 1) * per_req)) for i, r in enumerate(reqs)}
    reqmap = {r.req_id: r for r in reqs}
    out = runner.execute(SchedulerOutput(prefill={r.req_id: prompt_len for r in reqs}, requests=reqmap,
                                         block_tables=tables))
    for r in reqs:
        r.num_computed_tokens = prompt_len
        r.output_token_ids.append(out.sampled[r.req_id])
    clock = _Clock()
    for _ in range(steps):
        with clock:
            out = runner.execute(SchedulerOutput(decode=list(reqmap), requests=reqmap, block_tables=tables))
        for r in reqs:  # the benchmark plays the scheduler's part
            r.num_computed_tokens += 1
            r.output_token_ids.append(out.sampled[r.req_id])
    runner.execute(SchedulerOutput(finished=list(reqmap)))
    return batch * steps / clock.wall, batch * steps / clock.cpu


def ours_prefill(loaded, prompt_len: int) -> tuple[float, float]:
    r = _requests(1, prompt_len, loaded.runner.vocab_size, 1)[0]
    table = {r.req_id: list(range(-(-prompt_len // loaded.block_size)))}
    with _Clock() as clock:
        loaded.runner.execute(SchedulerOutput(prefill={r.req_id: prompt_len}, requests={r.req_id: r},
                                              block_tables=table))
    loaded.runner.execute(SchedulerOutput(finished=[r.req_id]))
    return prompt_len / clock.wall, prompt_len / clock.cpu


def hf_decode(model, batch: int, prompt_len: int, steps: int, vocab: int) -> tuple[float, float]:
    """generate(steps + 1 tokens) minus generate(1 token): the decode steps alone, prefill cancelled out."""
    ids = torch.tensor([r.prompt_token_ids for r in _requests(batch, prompt_len, vocab, 1)], device=model.device)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    one, full = _Clock(), _Clock()
    with torch.inference_mode():
        with one:
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        with full:
            model.generate(ids, max_new_tokens=steps + 1, min_new_tokens=steps + 1, **kwargs)
    return batch * steps / (full.wall - one.wall), batch * steps / (full.cpu - one.cpu)


def hf_prefill(model, prompt_len: int, vocab: int) -> tuple[float, float]:
    ids = torch.tensor([_requests(1, prompt_len, vocab, 1)[0].prompt_token_ids], device=model.device)
    with torch.inference_mode(), _Clock() as clock:
        model(ids, use_cache=True)
    return prompt_len / clock.wall, prompt_len / clock.cpu


def _median_pair(ours, theirs, repeats: int) -> list[float]:
    """[ours wall, theirs wall, ours CPU, theirs CPU] tok/s, medians of runs that alternate the two sides
    so a burst of CPU contention from other processes hits both rather than one."""
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(theirs())
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return [med(a, 0), med(b, 0), med(a, 1), med(b, 1)]


def _row(what: str, m: list[float]) -> str:
    return f"{what:<20}{m[0]:>10.1f}{m[1]:>10.1f}{m[0] / m[1]:>7.2f}{m[2]:>12.1f}{m[3]:>10.1f}{m[2] / m[3]:>7.2f}"


def llama_cpp_decode(ref, batch: int, prompt_len: int, steps: int, vocab: int) -> tuple[float, float]:
    """llama-cpp-python's own generation (`ref`: a `llama_cpp.Llama`), greedy, `batch` sequences one after another
    (it has no batched generation): (wall, CPU) tokens/s, the clock running from each sequence's first token to its
    last. The reference side of benchmarks/cpu_speed.py and benchmarks/llamacpp_speed.py."""
    clock = _Clock()
    for r in _requests(batch, prompt_len, vocab, 1):
        gen = ref.generate(r.prompt_token_ids, temp=0.0, top_k=1, reset=True)
        next(gen)                     # prefill and first token, outside the clock
        with clock:
            for _ in range(steps):
                next(gen)
        gen.close()
    return batch * steps / clock.wall, batch * steps / clock.cpu


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM

    from sliceserve.model.loader import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF directory or GGUF file (default: embedded SmolLM2-135M)")
    p.add_argument("--batch-sizes", default="1,4,16,32")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per sequence before decoding")
    p.add_argument("--steps", type=int, default=16, help="decode iterations timed per batch size")
    p.add_argument("--prefill-lens", default="128,512", help="prompt lengths of the prefill rows")
    p.add_argument("--threads", default="1", help="torch thread counts to run, e.g. 1,2 (each a full table)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per row; medians are printed")
    p.add_argument("--kv-cache-mib", type=int, default=512)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]; both sides run there")
    p.add_argument("--dtype", default=None, help="float32 (default on CPU here: transformers has no int8 form to "
                   "compare with; benchmarks/cpu_speed.py times the int8 default), bfloat16 or float16 (CUDA default)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="CUDA: time eager decode steps instead of replayed CUDA graphs")
    args = p.parse_args(argv)
    threads, batches, prefills = _int_list(args.threads), _int_list(args.batch_sizes), _int_list(args.prefill_lens)
    if args.dtype is None and not args.device.startswith("cuda"):
        args.dtype = "float32"   # the same representation on both sides
    if args.repeats <= 0 or args.steps <= 0 or args.prompt_len <= 0:
        raise ValueError("--repeats, --steps and --prompt-len must be positive")
    loaded = load_model(args.model, device=args.device, dtype=args.dtype, num_threads=threads[0],
                        kv_cache_memory_bytes=args.kv_cache_mib << 20, cuda_graphs=args.cuda_graphs)
    from sliceserve.model.loader import _model_dir  # the same weights, as transformers loads them

    hf = AutoModelForCausalLM.from_pretrained(str(_model_dir(args.model)), dtype=getattr(torch, loaded.dtype))
    hf = hf.to(args.device).eval()
    vocab = loaded.runner.vocab_size
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"model {loaded.model_name}  device {where}  dtype {loaded.dtype}  decode: prompt {args.prompt_len} tokens, "
          f"{args.steps} timed steps  median of {args.repeats} alternating runs  "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    static = getattr(loaded.runner, "static_decode", None)
    if static is not None and static.graphs:
        print(f"CUDA graphs: {len(static.graphs)} decode shapes (batch {list(static.buckets.batch_sizes)} x context "
              f"{list(static.buckets.context_lens)}) captured at load in {static.capture_s:.2f} s, "
              f"{static.capture_bytes / 2**20:.0f} MiB")
    for t in threads:
        torch.set_num_threads(t)
        ours_decode(loaded, 1, 16, 2)  # warm-up (first-call allocations)
        hf_decode(hf, 1, 16, 2, vocab)
        print(f"\nthreads {t}")
        print(f"{'tok/s':<20}{'wall: ours':>10}{'hf':>10}{'ratio':>7}{'CPU: ours':>12}{'hf':>10}{'ratio':>7}")
        for b in batches:
            m = _median_pair(lambda: ours_decode(loaded, b, args.prompt_len, args.steps),
                             lambda: hf_decode(hf, b, args.prompt_len, args.steps, vocab), args.repeats)
            print(_row(f"decode batch {b}", m), flush=True)
        for n in prefills:
            m = _median_pair(lambda: ours_prefill(loaded, n), lambda: hf_prefill(hf, n, vocab), args.repeats)
            print(_row(f"prefill {n} tokens", m), flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
