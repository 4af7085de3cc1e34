"""Measure this device and fit the scheduler's latency model.

The runner is driven with synthetic SchedulerOutputs: hand-made Requests whose block tables come from a
KVBlockAllocator. A decode at context `ctx` needs no real prefill first: the request claims `ctx` computed
tokens, so the runner attends over `ctx` cached positions (zeroed first, untimed: model/profiling_view.py) and costs exactly
what a real decode at that context costs. Each grid point is timed a few times and its median kept, since
on a shared CPU single iterations can spike 2x (DESIGN.md).
"""
from __future__ import annotations

import itertools
import os
import platform
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from sliceserve.core.kv_cache import KVBlockAllocator
from sliceserve.core.latency import IterationSample, LatencyModel
from sliceserve.core.outputs import SchedulerOutput
from sliceserve.executor_api import Executor, profiling_executor
from sliceserve.request import Request, SamplingParams


@dataclass(frozen=True)
class ProfileGrid:
    batch_sizes: tuple[int, ...]
    contexts: tuple[int, ...]
    chunks: tuple[int, ...]
    repeats: int = 3
    warmup: int = 1
    # Each chunk is also timed after these many cached tokens: a chunk's attention reads its prefix, and a
    # prompt's later chunks cost up to 2-3x its first (sliceserve.core.latency, attention pairs).
    prefixes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "contexts", "chunks"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v <= 0 for v in values):
                raise ValueError(f"profile {name} must be a non-empty list of positive integers, got {values!r}")
        if any(not isinstance(v, int) or v <= 0 for v in self.prefixes):
            raise ValueError(f"profile prefixes must be positive integers, got {self.prefixes!r}")
        if len(set(self.contexts)) < 2:
            # With one context, k * ctx is a mix of the per-batch-size levels and the fit cannot split them.
            raise ValueError("profile needs at least two different context lengths to fit the context slope")
        if self.repeats <= 0 or self.warmup < 0:
            raise ValueError("profile repeats must be positive and warmup non-negative")

    @property
    def num_points(self) -> int:
        return len(self.batch_sizes) * len(self.contexts) + len(self.chunks) * (1 + len(self.prefixes))


# Decode batches in the profile span contexts from 0.5x to 1.5x the grid's (see profile_loaded).
DECODE_CTX_SPREAD = 0.5


def batch_sizes_up_to(max_batch: int) -> tuple[int, ...]:
    """Every size up to 16, then powers of two and the midpoints between them (24, 32, 48, ...), plus
    `max_batch`. A CPU's BLAS makes l(k) irregular: l(2) ~ 2 l(1), l(3) > l(4), l(12) > l(16) on this VM, so
    interpolating between powers of two under-predicted real batches of 5-7 and 9-12 by 13-33 %
    (benchmarks/engine_fidelity.py); measured sizes cost a few seconds more."""
    if max_batch <= 0:
        raise ValueError(f"--max-batch must be a positive integer, got {max_batch}")
    sizes = set(range(1, min(max_batch, 16) + 1)) | {max_batch}
    k = 16
    while k < max_batch:
        sizes.update(s for s in (k, k + k // 2) if s < max_batch)
        k *= 2
    return tuple(sorted(sizes))


def default_grid(max_batch: int = 32, contexts: Iterable[int] = (128, 512, 1024),
                 chunks: Iterable[int] = (32, 64, 128, 256, 512), quick: bool = False,
                 prefixes: Iterable[int] = (1024,)) -> ProfileGrid:
    contexts, chunks = tuple(sorted(set(contexts))), tuple(sorted(set(chunks)))
    prefixes = tuple(sorted(set(prefixes)))
    if quick:  # a few seconds: enough for a usable l(k) and p(n), only a rough context slope
        # The smallest chunk and the fourth (32 and 256 of the defaults): a slope over most of the chunks a
        # server runs (with 128 the largest, 512-token chunks came out 24 % under their live cost); the first
        # prefix prices the attention.
        quick_chunks = tuple(sorted({chunks[0], chunks[min(3, len(chunks) - 1)]}))
        return ProfileGrid(batch_sizes_up_to(min(max_batch, 4)), contexts[:2], quick_chunks, repeats=2, warmup=1,
                           prefixes=prefixes[:1])
    return ProfileGrid(batch_sizes_up_to(max_batch), contexts, chunks, prefixes=prefixes)


class _Synthetic:
    """Hands out synthetic requests and remembers which ones the runner must free next."""

    def __init__(self, allocator: KVBlockAllocator, vocab_size: int, seed: int) -> None:
        self.kv = allocator
        self.vocab_size = vocab_size
        self._rng = random.Random(seed)
        self._ids = itertools.count()
        self.to_free: list[str] = []

    def request(self, num_tokens: int, num_computed: int) -> Request:
        rid = f"profile-{next(self._ids)}"
        tokens = [self._rng.randrange(self.vocab_size) for _ in range(num_tokens)]
        req = Request(rid, tokens, SamplingParams(max_tokens=1, ignore_eos=True), arrival_s=0.0)
        req.num_computed_tokens = num_computed
        if not self.kv.allocate(rid, num_tokens):
            raise RuntimeError("synthetic request does not fit the KV cache")  # callers check first
        return req

    def output(self, reqs: list[Request], prefill: dict[str, int]) -> SchedulerOutput:
        finished, self.to_free = self.to_free, [r.req_id for r in reqs]
        return SchedulerOutput(
            prefill=prefill, decode=[r.req_id for r in reqs if r.req_id not in prefill], finished=finished,
            requests={r.req_id: r for r in reqs}, block_tables={r.req_id: self.kv.block_table(r.req_id) for r in reqs})

    def release(self, reqs: list[Request]) -> None:
        for r in reqs:
            self.kv.free(r.req_id)


def _time_point(runner: Executor, synth: _Synthetic, make: Callable[[], tuple[list[Request], dict[str, int]]],
                grid: ProfileGrid) -> float:
    times = []
    for i in range(grid.warmup + grid.repeats):
        reqs, prefill = make()
        out = runner.execute(synth.output(reqs, prefill))
        synth.release(reqs)
        if i >= grid.warmup:
            times.append(out.elapsed_s)
    return statistics.median(times)


def spread_contexts(k: int, ctx: int, spread: float) -> list[int]:
    """Contexts of a synthetic decode batch of k: evenly from ctx * (1 - spread) to ctx * (1 + spread)."""
    if k == 1 or spread == 0:
        return [ctx] * k
    return [max(1, round(ctx * (1 - spread + 2 * spread * i / (k - 1)))) for i in range(k)]


def measure(runner: Executor, grid: ProfileGrid, *, num_kv_blocks: int, block_size: int, max_model_len: int,
            vocab_size: int = 100, seed: int = 0, progress: bool = True,
            ctx_spread: float = 0.0,
            allocator: KVBlockAllocator | None = None) -> tuple[list[IterationSample], list[str]]:
    """Median iteration time per grid point, and a note for each point skipped (KV or length limits).
    `ctx_spread`: decode batches' contexts spread around the grid's (`spread_contexts`), as real batches are.
    `allocator`: take the synthetic requests' blocks from this one (a serving scheduler's, re-profiling in an idle
    gap: its free blocks only, so cached prefixes in use are never overwritten; `num_kv_blocks` = its free ones)."""
    from tqdm import tqdm

    synth = _Synthetic(allocator or KVBlockAllocator(num_kv_blocks, block_size), vocab_size, seed)
    samples: list[IterationSample] = []
    skipped: list[str] = []
    bar = tqdm(total=grid.num_points, desc="profile", unit="pt", disable=not progress, leave=False)
    for ctx, k in itertools.product(grid.contexts, grid.batch_sizes):
        bar.update(1)
        lengths = spread_contexts(k, ctx, ctx_spread)
        if max(lengths) + 1 > max_model_len or sum(synth.kv.blocks_for(n + 1) for n in lengths) > num_kv_blocks:
            skipped.append(f"decode k={k} ctx={ctx}: exceeds max_model_len or KV capacity")
            continue
        make = lambda lengths=lengths: ([synth.request(n + 1, n) for n in lengths], {})  # noqa: E731
        samples.append(IterationSample(k, sum(lengths) / k, 0, _time_point(runner, synth, make, grid),
                                       decode_ctx_max=max(lengths)))
    for n, prefix in itertools.product(grid.chunks, (0, *grid.prefixes)):
        bar.update(1)
        if n + prefix > max_model_len or synth.kv.blocks_for(n + prefix) > num_kv_blocks:
            skipped.append(f"prefill n={n} after {prefix}: exceeds max_model_len or KV capacity")
            continue
        def make(n: int = n, prefix: int = prefix) -> tuple[list[Request], dict[str, int]]:
            req = synth.request(prefix + n, prefix)   # the prefix's cache slots: zeroed, as a decode's context
            return [req], {req.req_id: n}
        samples.append(IterationSample(0, 0.0, n, _time_point(runner, synth, make, grid), prefill_ctx=float(prefix)))
    bar.close()
    runner.execute(SchedulerOutput(finished=synth.to_free))  # the runner frees the last synthetic requests
    if not any(s.num_decode for s in samples):
        raise ValueError("no decode point fits this KV cache / max_model_len; lower --contexts or --max-batch")
    return samples, skipped


def device_info(loaded: object | None = None) -> dict:
    """What the profile was measured on (stored with it: a profile only describes its own device)."""
    info: dict = {"machine": platform.machine(), "cpu": _cpu_name(), "num_cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if loaded is not None:
        info["backend"] = getattr(loaded, "backend", "torch")
        native = getattr(loaded.runner, "native", None)
        if native is not None:   # llama.cpp: its own threads and context, not torch's
            info["llamacpp_threads"], info["llamacpp_n_ctx"] = native.n_threads, native.n_ctx
            info.pop("torch_threads", None)
    for name in ("model_name", "device", "dtype", "representation", "num_kv_blocks", "block_size", "max_model_len"):
        if loaded is not None and hasattr(loaded, name):
            info[name] = str(getattr(loaded, name)) if name in ("device", "dtype") else getattr(loaded, name)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fit_error(model: LatencyModel, samples: list[IterationSample]) -> float:
    """Mean absolute relative error of the model on the samples it was fitted to: how well the l(k, ctx) +
    p(n) shape describes this device (a large value means noisy timings or a device the shape misses)."""
    errors = [abs(model.sample_time(s) - s.seconds) / s.seconds
              for s in samples if s.seconds > 0]
    return sum(errors) / len(errors) if errors else 0.0


def vocab_size(loaded) -> int:
    """Token ids safe to feed: inside both the tokenizer and the model's embedding table."""
    return min(len(loaded.tokenizer), getattr(loaded.runner, "vocab_size", len(loaded.tokenizer)))


def padded_lengths(loaded) -> list[int] | None:
    """The context lengths the runner pads decode steps to, when it replays CUDA graphs (their cost is the
    bucket's, not the context's: sliceserve.core.latency); None for an unpadded runner."""
    static = getattr(loaded.runner, "static_decode", None)
    if static is None or not getattr(static, "graphs", None):
        return None
    return list(static.buckets.context_lens)


def profile_loaded(loaded, grid: ProfileGrid, *, seed: int = 0, progress: bool = True,
                   name: str | None = None) -> tuple[LatencyModel, dict]:
    """Profile a LoadedModel (sliceserve.model.loader); returns the fitted model and the JSON extras
    (device info and raw samples) that `LatencyModel.save(path, extra)` stores alongside it."""
    buckets = padded_lengths(loaded)
    # Real decode batches mix context lengths, and a runner that splits a batch by length (the CPU path)
    # then makes several, masked attention calls: equal-length batches, one unmasked call, were the cheapest
    # case and under-predicted real batches of 5-10 by 10-27 % (engine-fidelity.md). A CUDA-graph runner
    # pads to its buckets instead, which the latency model charges by the bucket of the mean context; its
    # profile keeps equal lengths so that mean and padded length agree.
    samples, skipped = measure(profiling_executor(loaded), grid, num_kv_blocks=loaded.num_kv_blocks,
                               block_size=loaded.block_size, max_model_len=loaded.max_model_len,
                               vocab_size=vocab_size(loaded), seed=seed, progress=progress,
                               ctx_spread=0.0 if buckets else DECODE_CTX_SPREAD)
    info = device_info(loaded)
    notes = f"measured by sliceserve profile: {grid.num_points - len(skipped)} points, median of {grid.repeats}"
    if skipped:
        notes += f"; skipped {len(skipped)} (KV / length limits)"
    # A CPU's decode attention grows with each request's context only (`LatencyModel.fit`).
    on_cpu = str(getattr(loaded, "device", "")).split(":")[0] == "cpu"
    model = LatencyModel.fit(samples, name=name or f"{info.get('model_name', 'model')}@{info.get('device', '?')}",
                             ctx_buckets=buckets, iteration_slope=not on_cpu)
    model.notes = f"{notes}; fit error {fit_error(model, samples):.1%} (mean |relative error| on the samples)"
    return model, {"device": info, "samples": [asdict(s) for s in samples]}


def quick_estimate(loaded, max_batch: int = 8, progress: bool = False) -> LatencyModel:
    """A latency model from a few seconds of measurement, for engines started without a saved profile.
    Batch sizes go up to 8: with only 1, 2, 4 measured, l(8) came from extrapolating the last two levels,
    which a noisy (or pooled, flat) end turned into l(8) = l(4), 38-40 % under a measured l(8)."""
    # Chunks of 32 and 256 tokens: with 32 and 128 the live 512-token chunks (prefix 0) measured 1.3x the
    # estimate and chunks under 64 tokens 0.6-0.8x (run 5, docs/results/live-fidelity.md). Each also after 1024
    # cached tokens: there attention is about half a chunk's time on the CPU (after 512 a quarter, which two
    # noisy timings priced 4x too low on a busy machine and the online factor then chased).
    # llama.cpp holds only what it computed: each prefix point first fills its 1024 tokens (untimed, ~6-8 ms a
    # token on one thread; six fills, ~45 s more on a start-up estimate that already takes ~3 minutes there, its
    # decode contexts being filled the same way); it goes without.
    prefixes = () if getattr(loaded, "backend", "torch") == "llamacpp" else (1024,)
    grid = ProfileGrid(batch_sizes_up_to(max_batch), (16, 256), (32, 256), repeats=2, warmup=1, prefixes=prefixes)
    model, _ = profile_loaded(loaded, grid, progress=progress, name="quick-estimate")
    return model
