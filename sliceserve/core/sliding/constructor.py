"""SlidingServe's BatchConstructor: when the chunk plan would make some request miss its TTFT, a 0/1
knapsack chooses which at-risk prompts run this iteration.

Items: waiting or partly prefilled requests with a TTFT SLO and no token yet, whose remaining prompt fits
the token cap and could meet the TTFT if run whole now with the current decodes (the others are lost for
this iteration and get no capacity). Trigger: one of them misses its TTFT under the chunk plan (finish
estimated optimistically: this iteration, then the rest of its prompt alone). value = utility, weight =
predicted seconds it adds to the decodes' iteration, capacity = the smallest remaining slack (decode
budgets and item TTFTs, all already shrunk by the safety margin) minus the decodes' own time.
The knapsack batch carries only the chosen prompts; if it breaks the token cap or the predicted time
(the predictor is additive within a regime but not across regimes or on the prior), items go, lowest
value per token first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from sliceserve.core.sliding.knapsack import select_within
from sliceserve.core.sliding.sorter import next_deadline_s
from sliceserve.request import Request

Plan = list[tuple[Request, int]]
Chunks = list[tuple[int, int]]


@dataclass(slots=True)
class Construction:
    triggered: bool          # some savable TTFT would be missed under the chunk plan
    plan: Plan | None        # the knapsack's batch, or None to keep the chunk plan


def construct(now: float, queue: Sequence[Request], plan: Plan, decode_budgets_s: Sequence[float],
              time_with: Callable[[Chunks], float], cap: int, margin: float, bins: int) -> Construction:
    """`time_with(chunks)`: predicted seconds of an iteration of the current decodes plus these prefill
    chunks (cached tokens, chunk length). `decode_budgets_s`: this-iteration budgets of the decodes."""
    base = time_with([])
    end_s = time_with([(r.num_computed_tokens, n) for r, n in plan])
    planned = {r.req_id: n for r, n in plan}
    keep = 1.0 - margin
    items: list[tuple[Request, float, float]] = []   # (request, weight s, slack s)
    missed = False
    for r in queue:
        rem = r.num_uncomputed_tokens
        if r.token_times_s or r.slo.ttft_s is None or rem > cap:
            continue
        slack = (next_deadline_s(r) - now) * keep
        weight = time_with([(r.num_computed_tokens, rem)]) - base
        if base + weight > slack:
            continue
        items.append((r, weight, slack))
        done = planned.get(r.req_id, 0)
        finish = end_s if done == rem else end_s + time_with([(r.num_computed_tokens + done, rem - done)])
        missed = missed or finish > slack
    if not missed:
        return Construction(False, None)
    capacity = min([*decode_budgets_s, *(s for _, _, s in items)]) - base
    chosen = [items[i] for i in select_within([r.utility for r, _, _ in items], [w for _, w, _ in items],
                                              capacity, bins)]
    chosen.sort(key=lambda it: it[0].utility / it[0].num_uncomputed_tokens, reverse=True)
    while chosen and (sum(r.num_uncomputed_tokens for r, _, _ in chosen) > cap or time_with(
            [(r.num_computed_tokens, r.num_uncomputed_tokens) for r, _, _ in chosen]) > base + capacity):
        chosen.pop()
    return Construction(True, [(r, r.num_uncomputed_tokens) for r, _, _ in chosen] or None)
