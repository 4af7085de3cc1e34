"""Least-squares helpers of the latency model's fit (sliceserve.core.latency.LatencyModel.fit)."""
from __future__ import annotations

import numpy as np


def relative_lstsq(x: np.ndarray, y: np.ndarray, keep: int = 0) -> np.ndarray:
    """Least squares on relative error (rows weighted by 1 / y). Columns from `keep` on are slopes that must
    not be negative: one that comes out negative is dropped (0) and the rest refitted."""
    w = 1.0 / np.maximum(y, 1e-9)
    active = list(range(x.shape[1]))
    while True:
        sol, *_ = np.linalg.lstsq(x[:, active] * w[:, None], y * w, rcond=None)
        coef = np.zeros(x.shape[1])
        coef[active] = sol
        negative = [c for c in active if c >= keep and coef[c] < 0]
        if not negative:
            return coef
        active.remove(min(negative, key=lambda c: coef[c]))


def non_decreasing(values: list[float], weights: list[int]) -> list[float]:
    """Weighted least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []   # [mean, weight, count]
    for v, w in zip(values, weights):
        blocks.append([v, float(max(w, 1)), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2, c2), (m1, w1, c1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return [m for m, _, c in blocks for _ in range(c)]
