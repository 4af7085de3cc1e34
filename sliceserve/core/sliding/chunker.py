"""SlidingChunker: this iteration's prefill chunk chosen jointly with the next one.

Every decode with a per-token deadline gives two budgets, in seconds from now: `s1`, by when this
iteration must end (its next token's deadline), and `s2`, by when the next iteration must end (the token
after that: s1 + tpot). The chunker picks prefill token counts (c1, c2) for the two iterations that
maximise c1 + c2 subject to t1(c1) <= s1 and t1(c1) + t2(c1, c2) <= s2 for every such decode; ties go to
the larger c1 (earlier tokens shorten TTFT). Only c1 is executed; the next iteration chooses again from
fresh state, so the window slides. Looking one iteration ahead is what keeps a greedy chunk from
spending all of a decode's banked slack now and forcing a tiny chunk (or a missed token) next time, and
with a super-linear prefill cost two balanced chunks carry more tokens than a big one and a small one.

Search: chunk sizes on a grid (`chunk_grid`: 0, powers of two below `step`, multiples of `step`, the cap).
c1 runs over the grid, c2 is bisected on the grid. Every accepted point is checked against the
budgets, so the answer keeps every budget that c1 = c2 = 0 keeps even if the latency predictor is not
monotone; only optimality assumes predicted time grows with the chunk.
Budgets that even (0, 0) breaks are dropped: no chunk size can help those decodes, and letting them
veto all prefill would stall the queue for nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from sliceserve.request import Request


@dataclass(frozen=True, slots=True)
class ChunkChoice:
    first: int          # prefill tokens in this iteration
    second: int         # planned prefill tokens in the next one (not executed; it is re-planned)
    constrained: bool   # whether any decode budget limited the search


def chunk_grid(cap: int, step: int) -> list[int]:
    if cap <= 0:
        return [0]
    sizes = {0, cap}
    p = 1
    while p < min(step, cap):
        sizes.add(p)
        p *= 2
    sizes.update(range(step, cap, step))
    return sorted(sizes)


def choose_chunks(t1: Callable[[int], float], t2: Callable[[int, int], float],
                  budgets: Sequence[tuple[float, float]], cap1: int, cap2: int, pending: int,
                  step: int, min_chunk: int = 0) -> ChunkChoice:
    """`t1(c1)`: predicted seconds of this iteration with c1 prefill tokens; `t2(c1, c2)`: of the next
    one with c2 more. `cap1`/`cap2`: token caps per iteration; `pending`: prefill tokens queued in all.
    `min_chunk`: tokens granted anyway when the decodes' budgets leave none even at c1 = 0 and there
    is no budget left to keep (progress guarantee)."""
    cap1 = max(0, min(cap1, pending))
    if cap1 == 0:
        return ChunkChoice(0, 0, False)
    base1 = t1(0)
    base2 = base1 + t2(0, 0)
    kept = [(s1, s2) for s1, s2 in budgets if base1 <= s1 and base2 <= s2]
    if not kept:
        if budgets:  # every decode is late whatever we do: keep prefill moving by the floor
            first = min(cap1, min_chunk)
            return ChunkChoice(first, 0, True)
        return ChunkChoice(cap1, max(0, min(cap2, pending - cap1)), False)
    lim1 = min(s1 for s1, _ in kept)
    lim2 = min(s2 for _, s2 in kept)
    if math.isinf(lim1) and math.isinf(lim2):
        return ChunkChoice(cap1, max(0, min(cap2, pending - cap1)), False)
    best = ChunkChoice(0, 0, True)
    best_sum = -1
    for c1 in reversed(chunk_grid(cap1, step)):
        c2_cap = max(0, min(cap2, pending - c1))
        if c1 + c2_cap <= best_sum:
            break  # descending c1: no smaller first chunk can beat (or tie with a larger c1) any more
        first_s = t1(c1)
        if first_s > lim1:
            continue
        c2 = _largest_second(lambda c: first_s + t2(c1, c), lim2, chunk_grid(c2_cap, step))
        if c2 is None:
            continue
        if c1 + c2 > best_sum:
            best, best_sum = ChunkChoice(c1, c2, True), c1 + c2
    return best


def _largest_second(total: Callable[[int], float], limit: float, grid: list[int]) -> int | None:
    """Largest grid size whose total time is within `limit`, by bisection from a verified feasible point."""
    if total(grid[0]) > limit:
        return None
    lo, hi = 0, len(grid) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if total(grid[mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return grid[lo]


class PromptRanges:
    """The queue's prompts laid end to end: `(start, stop)` -> the chunks (tokens already computed, n) that
    token range [start, stop) covers, and the requests whose prefill it completes. Memoised: the chunk
    search asks for the same ranges many times."""

    def __init__(self, queue: Sequence[Request]) -> None:
        self.queue = queue
        self._memo: dict[tuple[int, int], tuple[list[tuple[int, int]], list[Request]]] = {}

    def __call__(self, start: int, stop: int) -> tuple[list[tuple[int, int]], list[Request]]:
        if (start, stop) in self._memo:
            return self._memo[(start, stop)]
        chunks, done, pos = [], [], 0
        for r in self.queue:
            rem = r.num_uncomputed_tokens
            lo, hi = max(start, pos), min(stop, pos + rem)
            if hi > lo:
                chunks.append((r.num_computed_tokens + lo - pos, hi - lo))
                if hi == pos + rem:
                    done.append(r)
            pos += rem
            if pos >= stop:
                break
        self._memo[(start, stop)] = (chunks, done)
        return chunks, done
