"""Rolling latency distributions (TTFT, TPOT, ITL, e2e) and SLO attainment per SLO class.

The controller and /v1/status need *recent* behaviour, not totals since start: a slowdown five minutes ago
must not hide behind an hour of good service. Each class keeps its last `window` finished requests (and
their inter-token gaps, capped at `itl_window`), fed from finished `Request`s through the project's one
definition of TTFT/TPOT/met (`sliceserve.metrics.request_metrics`).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from sliceserve.metrics.request_metrics import request_metrics
from sliceserve.request import FinishReason, Request


def percentile(values: list[float] | deque[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of the samples at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class ClassWindow:
    window: int
    itl_window: int
    ttft: deque[float] = field(init=False)
    tpot: deque[float] = field(init=False)
    e2e: deque[float] = field(init=False)
    itl: deque[float] = field(init=False)
    met: deque[bool] = field(init=False)
    # (finish time, output tokens) for the throughput of the class over the window.
    done: deque[tuple[float, int]] = field(init=False)
    total: int = 0
    total_met: int = 0

    def __post_init__(self) -> None:
        self.ttft, self.tpot, self.e2e = deque(maxlen=self.window), deque(maxlen=self.window), deque(maxlen=self.window)
        self.itl = deque(maxlen=self.itl_window)
        self.met = deque(maxlen=self.window)
        self.done = deque(maxlen=self.window)

    def values(self, metric: str) -> deque[float]:
        if metric not in ("ttft", "tpot", "e2e", "itl"):
            raise ValueError(f"unknown latency metric {metric!r}")
        return getattr(self, metric)

    def attainment(self, last: int | None = None) -> float | None:
        recent = list(self.met)[-last:] if last else list(self.met)
        return sum(recent) / len(recent) if recent else None

    def throughput(self) -> float | None:
        """Output tokens per second over the span of the window's finished requests."""
        if len(self.done) < 2:
            return None
        span = self.done[-1][0] - self.done[0][0]
        tokens = sum(n for _, n in list(self.done)[1:])   # the first one opens the span
        return tokens / span if span > 0 else None


class LatencyTracker:
    """Per-class rolling windows, fed with finished requests."""

    def __init__(self, window: int = 200, itl_window: int = 2000) -> None:
        if window <= 0 or itl_window <= 0:
            raise ValueError("latency windows must hold at least one sample")
        self.window = window
        self.itl_window = itl_window
        self.classes: dict[str, ClassWindow] = {}

    def cls(self, name: str) -> ClassWindow:
        w = self.classes.get(name)
        if w is None:
            w = self.classes[name] = ClassWindow(self.window, self.itl_window)
        return w

    def observe(self, req: Request) -> None:
        """Record a finished request. Aborts (the client left) carry no verdict and are skipped; rejected
        and errored requests count as misses, as the metrics module defines."""
        if req.finish_reason is FinishReason.ABORT:
            return
        m = request_metrics(req)
        w = self.cls(req.slo_class)
        w.total += 1
        w.total_met += int(m.met)
        w.met.append(m.met)
        if m.ttft_s is not None:
            w.ttft.append(m.ttft_s)
        if m.tpot_s is not None:
            w.tpot.append(m.tpot_s)
        if m.e2e_s is not None:
            w.e2e.append(m.e2e_s)
        w.itl.extend(m.itls_s)
        if req.finished_s is not None:
            w.done.append((req.finished_s, req.num_output_tokens))

    def percentile(self, slo_class: str, metric: str, p: float) -> float | None:
        w = self.classes.get(slo_class)
        return percentile(w.values(metric), p) if w is not None else None

    def mean(self, slo_class: str, metric: str) -> float | None:
        w = self.classes.get(slo_class)
        vals = w.values(metric) if w is not None else ()
        return sum(vals) / len(vals) if vals else None

    def summary(self) -> dict[str, dict]:
        """JSON-ready per-class view (milliseconds at this edge, as HTTP fields are)."""
        out: dict[str, dict] = {}
        for name, w in sorted(self.classes.items()):
            entry: dict = {"finished": w.total, "attainment_total": w.total_met / w.total if w.total else None,
                           "attainment_recent": w.attainment(), "throughput_tok_s": w.throughput()}
            for metric in ("ttft", "tpot", "itl", "e2e"):
                vals = w.values(metric)
                entry[f"{metric}_ms"] = None if not vals else {
                    "mean": 1e3 * sum(vals) / len(vals), "p50": 1e3 * percentile(vals, 50),
                    "p90": 1e3 * percentile(vals, 90), "p99": 1e3 * percentile(vals, 99), "n": len(vals)}
            out[name] = entry
        return out
