"""Summaries over many requests: attainment, goodput, latency percentiles; overall and per SLO class.

- slo_attainment      = requests meeting every bound / all arrivals (rejected, aborted, unfinished = missed)
- utility_attainment  = utility of the requests meeting every bound / utility of all arrivals
- ttft/tpot/e2e_attainment = the same share for one bound alone (shows *which* SLO is missed)
- goodput_rps         = requests meeting every bound / makespan: vLLM bench's "request goodput"
- makespan_s          = last finish - first arrival
- throughput_tok_s    = output tokens of completed requests / makespan
- mean_e2e_s          = mean completion time of completed requests (the SLICE paper's "completion time")
Latency statistics (mean, p50, p90, p99 of ttft, tpot, itl, e2e) cover completed requests only; a statistic
with no sample is None.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from sliceserve.metrics.request_metrics import RequestMetrics

PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")


def _stats(name: str, values: Sequence[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"mean_{name}_s": float(np.mean(values)) if len(values) else None}
    qs = np.percentile(values, PERCENTILES) if len(values) else [None] * len(PERCENTILES)
    for p, q in zip(PERCENTILES, qs):
        out[f"p{p}_{name}_s"] = None if q is None else float(q)
    return out


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def makespan_s(metrics: Sequence[RequestMetrics]) -> float:
    """Last finish minus first arrival; 0 when there is nothing to measure."""
    ends = [m.finished_s for m in metrics if m.finished_s is not None]
    if not metrics or not ends:
        return 0.0
    return max(0.0, max(ends) - min(m.arrival_s for m in metrics))


def summarize(metrics: Sequence[RequestMetrics], makespan: float) -> dict[str, float | int | None]:
    """One summary dict (flat, JSON-ready) over `metrics`; `makespan` in seconds scales the rates."""
    n = len(metrics)
    done = [m for m in metrics if m.completed]
    met = [m for m in metrics if m.met]
    total_utility = sum(m.utility for m in metrics)
    out: dict[str, float | int | None] = {
        "num_requests": n,
        "num_finished": len(done),
        "num_rejected": sum(m.finish_reason == "rejected" for m in metrics),
        "num_aborted": sum(m.finish_reason == "abort" for m in metrics),
        "num_errored": sum(m.finish_reason == "error" for m in metrics),
        "num_unfinished": sum(m.finish_reason is None for m in metrics),
        "num_met": len(met),
        "slo_attainment": _share(len(met), n),
        "utility_attainment": _share(sum(m.utility for m in met), total_utility),
        "ttft_attainment": _share(sum(m.ttft_met for m in metrics), n),
        "tpot_attainment": _share(sum(m.tpot_met for m in metrics), n),
        "e2e_attainment": _share(sum(m.e2e_met for m in metrics), n),
        "makespan_s": makespan,
        "goodput_rps": _share(len(met), makespan) if n else None,
        "throughput_tok_s": _share(sum(m.num_output_tokens for m in done), makespan) if n else None,
        "num_output_tokens": sum(m.num_output_tokens for m in done),
        "num_preemptions": sum(m.num_preemptions for m in metrics),
    }
    out.update(_stats("ttft", [m.ttft_s for m in done]))
    out.update(_stats("tpot", [m.tpot_s for m in done if m.tpot_s is not None]))
    out.update(_stats("itl", [x for m in done for x in m.itls_s]))
    out.update(_stats("e2e", [m.e2e_s for m in done]))
    return out


def summarize_by_class(metrics: Sequence[RequestMetrics], makespan: float,
                       classes: Iterable[str] = ()) -> dict[str, dict[str, float | int | None]]:
    """Per-class summaries over the same makespan; `classes` adds classes that had no arrivals."""
    names = sorted({m.slo_class for m in metrics} | set(classes))
    return {c: summarize([m for m in metrics if m.slo_class == c], makespan) for c in names}
