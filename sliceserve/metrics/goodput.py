"""DistServe's goodput (Zhong et al., OSDI'24): the highest request rate a system sustains while at least a
target share (90%) of requests meets its SLOs. Read off a rate sweep."""
from __future__ import annotations

from typing import Sequence

DISTSERVE_TARGET = 0.9


def max_rate_meeting(rates: Sequence[float], attainments: Sequence[float | None],
                     target: float = DISTSERVE_TARGET) -> float | None:
    """The highest swept rate such that attainment >= `target` at it and at every lower swept rate.

    Requiring every lower rate too ("stays >= 90%", SLICE.md) keeps a lucky point past a collapse from
    counting. None when even the lowest rate misses the target (or nothing was swept)."""
    if len(rates) != len(attainments):
        raise ValueError("rates and attainments must have the same length")
    if not 0 < target <= 1:
        raise ValueError(f"goodput target must be in (0, 1], got {target!r}")
    best: float | None = None
    for rate, att in sorted(zip(rates, attainments), key=lambda p: p[0]):
        if att is None or att < target:
            break
        best = rate
    return best
