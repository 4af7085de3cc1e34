"""The latency model audited live: every iteration's predicted and measured time, kept and exported.

Everything the scheduler decides rests on its latency model, so the server shows how right it is: a ring
buffer of the last iterations (predicted before the model learnt from them, measured, kind), a Prometheus
histogram of |predicted / measured - 1| per kind, and for /v1/status the rolling median and p90 error per
kind (the buffer's last `ROLLING_S` seconds) beside the model's current terms and online factors.
Kinds: `decode` (decode-only iterations), `prefill` (prefill only), `mixed` (a prompt chunk beside decodes).
With a drift detector attached (sliceserve.core.latency_drift) every record feeds it too, and its state and the
re-profiles it asked for (counter sliceserve:latency_reprofiles{term}) are exported here.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from sliceserve.core.latency import IterationSample, LatencyModel
from sliceserve.core.latency_drift import DriftDetector

KINDS = ("decode", "prefill", "mixed")
# The rolling error covers the ring buffer's iterations of the last ROLLING_S seconds: 512 iterations are ~5 s
# on a GPU but 25-35 s on a 2-vCPU CPU, where a window that long reported how long it is, not how soon the
# model caught up with a change (live-fidelity runs 22-23: 36-46 s after a competing process stopped).
ROLLING_S = 20.0
_ERROR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


def iteration_kind(sample: IterationSample) -> str:
    if sample.prefill_tokens <= 0:
        return "decode"
    return "prefill" if sample.num_decode == 0 else "mixed"


class LatencyAudit:
    def __init__(self, registry: CollectorRegistry, size: int = 512) -> None:
        # (iteration number, kind, predicted_s, measured_s, decodes, prompt tokens, decodes' mean context, the
        # prompt chunk's cached prefix, the engine clock at its end); the number lets a poller take each one
        # once, the shape lets it tell which shapes the model misses.
        self.records: deque[tuple[int, str, float, float, int, int, float, float, float]] = deque(maxlen=size)
        self.count = 0
        self.error = Histogram("sliceserve:latency_model_relative_error",
                               "Per iteration |predicted / measured - 1| of the latency model, by iteration kind",
                               ["kind"], buckets=_ERROR_BUCKETS, registry=registry)
        self.reprofiles = Counter("sliceserve:latency_reprofiles", "Latency terms re-profiled in an idle gap "
                                  "after their residual stayed biased, by term", ["term"], registry=registry)
        self.drift: DriftDetector | None = None

    def record(self, last: tuple[IterationSample, float] | None, now: float = 0.0) -> None:
        """One measured iteration and what the model had predicted for it; `now`: the engine clock at its end."""
        if last is None:
            return
        sample, predicted = last
        kind = iteration_kind(sample)
        self.count += 1
        self.records.append((self.count, kind, predicted, sample.seconds, sample.num_decode, sample.prefill_tokens,
                             sample.decode_ctx, sample.prefill_ctx, now))
        self.error.labels(kind).observe(abs(predicted / sample.seconds - 1.0))
        if self.drift is not None:
            self.drift.observe(kind, predicted, sample.seconds, now)

    def reprofiled(self, term: str) -> None:
        self.reprofiles.labels(term).inc()

    def rolling_error(self, window_s: float = ROLLING_S) -> dict[str, dict[str, Any]]:
        """Per kind over the ring buffer's iterations that ended within `window_s` of the last one: count,
        median and p90 of |pred/meas - 1|, and the median ratio."""
        out: dict[str, dict[str, Any]] = {}
        since = self.records[-1][8] - window_s if self.records else 0.0
        recent = [r for r in self.records if r[8] >= since]
        for kind in KINDS:
            ratios = np.array([r[2] / r[3] for r in recent if r[1] == kind])
            if ratios.size == 0:
                continue
            err = np.abs(ratios - 1.0)
            out[kind] = {"n": int(ratios.size), "median_abs_error": float(np.median(err)),
                         "p90_abs_error": float(np.quantile(err, 0.9)), "median_ratio": float(np.median(ratios))}
        return out

    def status(self, latency: LatencyModel) -> dict[str, Any]:
        return {"decode_l1_ms": latency.decode_time(1) * 1e3, "prefill_128_ms": latency.prefill_time(128) * 1e3,
                "prefill_256_ms": latency.prefill_time(256) * 1e3,
                "factors": {"decode": latency.decode_factor, "prefill": latency.prefill_factor},
                "coefficients": {k: v for k, v in latency.to_dict().items() if k not in ("name", "notes")},
                "profile": latency.name, "rolling_error": self.rolling_error(), "rolling_window_s": ROLLING_S,
                "iterations": self.count, "drift": self.drift.status() if self.drift is not None else None,
                "recent": [{"i": i, "kind": k, "predicted_ms": p * 1e3, "measured_ms": m * 1e3, "decodes": nd,
                            "prompt_tokens": npt, "decode_ctx": round(ctx, 1), "prompt_prefix": round(prefix, 1)}
                           for i, k, p, m, nd, npt, ctx, prefix, _ in list(self.records)[-200:]]}
