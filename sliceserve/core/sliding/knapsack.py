"""0/1 knapsack for SlidingServe's BatchConstructor: which TTFT-at-risk requests run this iteration.

value = the request's priority value, weight = predicted seconds it adds to the iteration, capacity = the
smallest remaining slack. Weights are seconds (floats); the exact dynamic programme runs over integer
weights, so `select_within` discretises them into `bins` units of the capacity, rounding each weight *up*:
every subset it returns truly fits the capacity, and it is optimal for the rounded weights.
"""
from __future__ import annotations

import math
from typing import Sequence


def knapsack_01(values: Sequence[float], weights: Sequence[int], capacity: int) -> list[int]:
    """Indices of a subset with maximal total value and total weight <= capacity (exact DP, O(n * C)).

    Ties in value go to the subset found first in index order, so callers pass items best-first."""
    if capacity < 0:
        return []
    n = len(values)
    if len(weights) != n:
        raise ValueError("knapsack needs one weight per value")
    if any(w < 0 for w in weights):
        raise ValueError("knapsack weights must be >= 0")
    # best[c] = best value with total weight <= c; keep[i][c] = item i taken at capacity c.
    best = [0.0] * (capacity + 1)
    keep = [[False] * (capacity + 1) for _ in range(n)]
    for i, (v, w) in enumerate(zip(values, weights)):
        if v <= 0 or w > capacity:
            continue  # a worthless or oversized item never improves a subset
        row = keep[i]
        for c in range(capacity, w - 1, -1):
            cand = best[c - w] + v
            if cand > best[c]:
                best[c] = cand
                row[c] = True
    chosen: list[int] = []
    c = capacity
    for i in range(n - 1, -1, -1):
        if keep[i][c]:
            chosen.append(i)
            c -= weights[i]
    chosen.reverse()
    return chosen


def select_within(values: Sequence[float], weights_s: Sequence[float], capacity_s: float, bins: int) -> list[int]:
    """Knapsack over float weights (seconds): discretise into `bins` units of `capacity_s`, rounding up."""
    if bins <= 0:
        raise ValueError(f"knapsack bins must be positive, got {bins!r}")
    if not capacity_s > 0:
        return [i for i, w in enumerate(weights_s) if w <= 0 and values[i] > 0]
    unit = capacity_s / bins
    # The small epsilon keeps a weight that is an exact multiple of the unit from rounding up a whole
    # unit because of float noise (3 * 0.1 / 0.1 = 3.0000000000000004).
    ints = [max(0, math.ceil(w / unit - 1e-9)) for w in weights_s]
    return knapsack_01(values, ints, bins)
