"""Arrival processes with `vllm bench serve` semantics.

Inter-arrival gaps are Gamma(shape=burstiness, scale=1/(rate*burstiness)): the mean gap is 1/rate for any
burstiness; burstiness 1 is a Poisson process, below 1 is burstier, above 1 is more regular.
"""
from __future__ import annotations

import math

import numpy as np


def check_rate(rate: float, burstiness: float = 1.0) -> None:
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"request rate must be a positive number of requests/s, got {rate!r}")
    if not (isinstance(burstiness, (int, float)) and math.isfinite(burstiness) and burstiness > 0):
        raise ValueError(f"burstiness must be a positive number (1 = Poisson), got {burstiness!r}")


def arrival_times(rate: float, duration_s: float, rng: np.random.Generator, burstiness: float = 1.0,
                  max_requests: int | None = None) -> list[float]:
    """Arrival times in [0, duration_s), first gap included (so the first arrival is not at 0).

    Gaps are drawn as standard-gamma variates and then scaled, so the same `rng` state gives the same
    underlying draws at every rate: a rate sweep compares like with like (common random numbers).
    """
    check_rate(rate, burstiness)
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration_s!r}")
    scale = 1.0 / (rate * burstiness)
    times: list[float] = []
    now = 0.0
    # Draw in blocks: one numpy call per block keeps long runs fast without changing the sequence.
    block = max(16, int(rate * duration_s * 1.2) + 16)
    while True:
        for gap in rng.standard_gamma(burstiness, size=block):
            now += float(gap) * scale
            if now >= duration_s or (max_requests is not None and len(times) >= max_requests):
                return times
            times.append(now)
