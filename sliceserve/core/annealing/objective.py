"""The annealing objective G = (requests expected to meet their SLO) / (sum of their predicted latencies)
(Huang et al., 2025), evaluated for one state: an order of the waiting requests plus a batch size.

The cost of a state comes from simulating the batches in that order. The paper's simulator is not
public; ours is a slot model of continuous batching, chosen because it is cheap (O(n log b) per state):
- `b` slots. Running requests hold a slot until their predicted finish; each waiting request, in the
  given order, takes the earliest slot to free up (immediately while fewer than `b` are busy).
- Every decode step costs tau(b) = decode_time(min(b, all requests), ctx) of the latency model: the
  batch is assumed full while enough requests exist, and ctx is their mean current length.
- A request's first token arrives `prefill_time(uncomputed tokens)` after it starts; then it needs
  (remaining output - 1) more steps of tau(b). Prefill stalls of other requests' decodes are ignored.
- Latency = predicted e2e (arrival to last token). A request is judged on e2e if it has an e2e SLO,
  else on TTFT and TPOT together (TPOT predicted as tau(b)); a request with no SLO always counts as met.
So a larger batch frees the queue sooner (better TTFT / e2e) but slows every step (worse TPOT): the
trade-off the batch-size move explores.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

from sliceserve.core.latency import LatencyModel
from sliceserve.slo import SLO

_INF = math.inf


@dataclass(slots=True)
class Job:
    """One request as the search sees it."""

    arrival_s: float
    prefill_s: float                 # predicted time of its still uncomputed tokens (0 for a decode)
    remaining_tokens: int            # output tokens still expected, >= 1
    slo: SLO
    first_token_s: float | None = None  # when its first token came, if it already has one
    decoding: bool = False           # running with only its last token uncomputed: each token is a step


class SearchProblem:
    def __init__(self, now: float, running: Sequence[Job], waiting: Sequence[Job], latency: LatencyModel,
                 max_batch: int, ctx: float = 0.0) -> None:
        if max_batch <= 0:
            raise ValueError(f"max_batch must be positive, got {max_batch!r}")
        self.now = now
        self.running = list(running)
        self.waiting = list(waiting)
        self.max_batch = max_batch
        total = len(self.running) + len(self.waiting)
        # tau[b]: one decode step's time when the batch size limit is b.
        self._tau = [0.0] + [latency.decode_time(max(1, min(b, total)), ctx) for b in range(1, max_batch + 1)]
        # Per waiting job, flattened for the hot loop.
        w = self.waiting
        self._arrival = [j.arrival_s for j in w]
        self._prefill = [j.prefill_s for j in w]
        self._steps = [j.remaining_tokens - 1 for j in w]
        self._first = [j.first_token_s for j in w]
        self._e2e = [j.slo.e2e_s for j in w]
        self._ttft = [_INF if j.slo.ttft_s is None else j.slo.ttft_s for j in w]
        self._tpot = [_INF if j.slo.tpot_s is None else j.slo.tpot_s for j in w]
        self._running_cache: dict[int, tuple[int, float, list[float]]] = {}

    def _running_part(self, b: int) -> tuple[int, float, list[float]]:
        """(met, latency sum, heap of slot-free times) of the running requests under batch size b."""
        cached = self._running_cache.get(b)
        if cached is None:
            tau, now = self._tau[b], self.now
            met, lat, frees = 0, 0.0, []
            for j in self.running:
                # A prefill (or recompute) chunk ends by sampling one token; a decode needs a step per token.
                end_of_prefill = now + j.prefill_s
                finish = (now + j.remaining_tokens * tau if j.decoding
                          else end_of_prefill + (j.remaining_tokens - 1) * tau)
                first = j.first_token_s if j.first_token_s is not None else end_of_prefill
                met += _meets(j.slo, first - j.arrival_s, finish - j.arrival_s, tau)
                lat += finish - j.arrival_s
                frees.append(finish)
            frees.sort()  # a sorted list is a valid heap
            cached = (met, lat, frees)
            self._running_cache[b] = cached
        return cached

    def score(self, order: Sequence[int], batch_size: int) -> tuple[int, float]:
        """(requests expected to meet their SLO, sum of predicted e2e latencies) for this state."""
        if not 1 <= batch_size <= self.max_batch:
            raise ValueError(f"batch size {batch_size} outside 1..{self.max_batch}")
        met, lat, frees = self._running_part(batch_size)
        heap = list(frees)
        tau, now = self._tau[batch_size], self.now
        arrival, prefill, steps, first_known = self._arrival, self._prefill, self._steps, self._first
        e2e, ttft, tpot = self._e2e, self._ttft, self._tpot
        pop, push = heapq.heappop, heapq.heappush
        for i in order:
            start = now
            while len(heap) >= batch_size:
                start = pop(heap)
            if start < now:
                start = now
            first = start + prefill[i]
            finish = first + steps[i] * tau
            if first_known[i] is not None:  # preempted after its first token: TTFT is history
                first = first_known[i]
            push(heap, finish)
            latency = finish - arrival[i]
            lat += latency
            bound = e2e[i]
            if bound is not None:
                met += latency <= bound
            else:
                met += first - arrival[i] <= ttft[i] and tau <= tpot[i]
        return met, lat

    def objective(self, order: Sequence[int], batch_size: int) -> float:
        """G = met / summed latency (0 when nothing is predicted to meet its SLO or there is no request)."""
        met, lat = self.score(order, batch_size)
        return met / lat if lat > 0 else 0.0


def _meets(slo: SLO, ttft: float, e2e: float, tpot: float) -> bool:
    if slo.e2e_s is not None:
        return e2e <= slo.e2e_s
    return (slo.ttft_s is None or ttft <= slo.ttft_s) and (slo.tpot_s is None or tpot <= slo.tpot_s)
