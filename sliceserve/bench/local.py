"""`sliceserve bench --engine local`: a workload on the real model, in-process, on the wall clock.

Policies run one after another on identical arrivals (same specs, same synthetic prompt tokens), each with
a fresh scheduler and a fresh copy of the latency model, sharing one loaded model. Prompts are random token
ids of the workload's prompt lengths; outputs are forced to the workload's output lengths (EOS ignored),
so every policy does the same work and only the scheduling differs. Results have the shape `simulate`
writes (sliceserve.bench.compare), plus each iteration's shape and measured time (fidelity checks).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from sliceserve.config import SchedulerConfig
from sliceserve.bench.device_scale import DeviceScale, latency_scale
from sliceserve.core.latency import LatencyModel
from sliceserve.engine.llm import build_engine, resolve_latency
from sliceserve.engine.wallclock import WallClockDriver
from sliceserve.metrics import makespan_s, request_metrics, summarize, summarize_by_class
from sliceserve.request import Request
from sliceserve.workload import Workload, to_requests

@dataclass
class LocalSettings:
    scheduler: dict[str, Any] = field(default_factory=dict)   # SchedulerConfig overrides
    max_time_s: float | None = None   # wall seconds after which unfinished requests are aborted (missed)
    seed: int = 0                     # seeds the synthetic prompt tokens
    include_requests: bool = True
    progress: bool = True
    constrained_fraction: float = 0.0  # share of requests given a grammar (sliceserve.bench.constrained)


def synthetic_requests(workload: Workload, prefix: str, vocab_size: int, max_model_len: int,
                       seed: int) -> tuple[list[Request], int]:
    """Fresh requests for `workload` with seeded random prompt tokens (identical for every prefix), lengths
    capped so prompt + output fits `max_model_len`; also returns how many were capped."""
    reqs = to_requests(workload.specs, workload.classes, prefix=prefix)
    capped = 0
    for i, req in enumerate(reqs):
        params = req.sampling_params
        out_len = min(params.max_tokens, max_model_len - 1)
        prompt_len = max(1, min(req.num_prompt_tokens, max_model_len - out_len))
        if (out_len, prompt_len) != (params.max_tokens, req.num_prompt_tokens):
            capped += 1
            params.max_tokens = out_len
        rng = np.random.default_rng([seed, i])
        req.prompt_token_ids = rng.integers(0, vocab_size, size=prompt_len).tolist()
    return reqs, capped


def run_policy(loaded: Any, policy: str, workload: Workload, latency: LatencyModel,
               settings: LocalSettings) -> dict:
    """{"summary", "per_class", ["requests"], "iterations"} for one policy on the real engine."""
    from sliceserve.bench.progress import progress

    engine = build_engine(loaded, policy, latency.copy(), **settings.scheduler)
    from sliceserve.model.profiler import vocab_size

    reqs, _ = synthetic_requests(workload, policy, vocab_size(loaded), loaded.max_model_len, settings.seed)
    if settings.constrained_fraction:
        from sliceserve.bench.constrained import constrain

        constrain(reqs, settings.constrained_fraction, settings.seed, loaded.tokenizer)
    bar = progress(len(reqs), policy, "requests", enabled=settings.progress)
    result = WallClockDriver(engine, on_finish=lambda _req: bar.update(1)).run(reqs, settings.max_time_s)
    bar.close()
    metrics = [request_metrics(r) for r in result.requests]
    span = makespan_s(metrics)
    summary = summarize(metrics, span)
    summary.update(num_iterations=result.num_iterations, num_violation_risks=result.num_violation_risks,
                   num_preemptions=result.num_preemptions, wall_end_s=result.end_s)
    out: dict = {"summary": summary, "per_class": summarize_by_class(metrics, span, workload.classes)}
    if settings.include_requests:
        out["requests"] = [m.to_record() for m in metrics]
    # [num_decode, mean decode context, prefill tokens, measured seconds, longest decode context] per iteration.
    out["iterations"] = [[s.num_decode, round(s.decode_ctx, 2), s.prefill_tokens, s.seconds, s.decode_ctx_max]
                         for s in result.iterations]
    return out


def warm_up(loaded: Any) -> None:
    """A few untimed iterations, so the first policy does not pay for one-time setup (allocations, caches)."""
    from sliceserve.executor_api import profiling_executor
    from sliceserve.model.profiler import ProfileGrid, measure

    measure(profiling_executor(loaded), ProfileGrid((1, 2), (16, 32), (16,), repeats=1, warmup=1), num_kv_blocks=loaded.num_kv_blocks,
            block_size=loaded.block_size, max_model_len=loaded.max_model_len, progress=False)


def run_local(loaded: Any, policies: list[str], workload: Workload, latency: LatencyModel, settings: LocalSettings,
              on_done: Callable[[str], None] | None = None) -> dict[str, dict]:
    """run_policy for each name, in order, on the same loaded model."""
    warm_up(loaded)
    results: dict[str, dict] = {}
    for policy in policies:
        results[policy] = run_policy(loaded, policy, workload, latency, settings)
        if on_done is not None:
            on_done(policy)
    return results


def describe(loaded: Any, latency: LatencyModel, profile: str | None, scale: DeviceScale,
             settings: LocalSettings, capped: int) -> dict:
    """The engine side of the result's "config"."""
    from sliceserve.model.profiler import device_info

    scheduler_config = asdict(SchedulerConfig().with_overrides(
        num_kv_blocks=loaded.num_kv_blocks, block_size=loaded.block_size, max_model_len=loaded.max_model_len,
        **settings.scheduler))
    del scheduler_config["policy"]  # one run per policy: the result's "policies" lists them
    return {
        "engine": "local", "device": device_info(loaded), "profile": profile or "quick-estimate",
        "profile_model": latency.to_dict(), **scale.describe(),
        "max_time_s": settings.max_time_s, "seed": settings.seed,
        "scheduler": scheduler_config,
        "num_requests_capped_to_max_model_len": capped,
    }


def resolve(loaded: Any, profile: str | None, slo_scale: float | None,
            ttft_scale: float | None = None) -> tuple[LatencyModel, DeviceScale]:
    """The latency model and the SLO scale factors (given, or derived from that model)."""
    latency = resolve_latency(loaded, profile)
    return latency, latency_scale(latency, slo_scale=slo_scale, ttft_scale=ttft_scale)


__all__ = ["LocalSettings", "describe", "resolve",
           "run_local", "run_policy", "synthetic_requests"]
