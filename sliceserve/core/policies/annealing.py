"""SLO-aware simulated-annealing scheduling (Huang, Xiong, Yu, Huang, Li, Zeng, Chen, "SLO-Aware Scheduling for
Large Language Model Inferences", 2025-04-21; a seed of this project: ../shared/seeds/).

A search chooses the order in which waiting requests are admitted and the batch size, maximising
G = (requests expected to meet their SLO) / (sum of their predicted latencies); a request is judged on
e2e if it has an e2e SLO, else on TTFT and TPOT together (core/annealing/objective.py says how a state
is costed). Execution is vLLM-like: running requests first (decodes, prompt chunks) within
`max_num_batched_tokens`, then waiting requests admitted in the searched order while fewer than the
chosen batch size are running; recompute preemption of the newest running request when KV runs out,
and no admission in that iteration.

The paper does not publish its schedule; every choice below is ours and a config field:
- `annealing_iterations` = 100 candidate states per search. Measured in the simulator on this project's
  2-vCPU EPYC (CPython 3.11, shared machine): median 0.8 ms per search with ~8 waiting requests,
  1.1 ms with ~16, 1.6 ms with 32; it grows linearly with the queue, so `annealing_window` (32) bounds
  it: only the first 32 waiting requests of the warm-started order are searched (and counted in G),
  later arrivals queue FCFS behind them until they move up.
- `annealing_t0` = 0.05: at the start a state 5% worse than the current is accepted with p = 1/e.
- `annealing_cooling` = 0.95 per iteration: after 100 iterations T is ~0.6% of t0, i.e. greedy.
- `annealing_batch_move_prob` = 0.2: one move in five changes the batch size (1..max_num_seqs), the
  rest swap two requests; the order has far more states than the batch size.
- Initial batch size `max_num_seqs` (vLLM's behaviour), warm-started afterwards.
- `annealing_default_output_len` = None: until a class has finished requests, its output length is
  predicted as the request's max_tokens (pessimistic, so no SLO is promised on a guess).
- `annealing_seed` = 0 seeds the search's random.Random.
- When to search: the paper re-plans as requests come and go. We set a flag on every arrival and
  completion and search lazily in the next `plan`; a preemption (the waiting set changes) also triggers
  one. New requests join the end of the previous order (warm start).
- A smaller chosen batch size never preempts running requests; it only holds admissions back.

Known behaviour of the objective as specified: G only sees the requests present now, so under overload
the search shrinks the batch to keep running requests' TPOT and pushes requests that will miss anyway
to the back. Attainment of TPOT rises, throughput and the TTFT tail suffer (see issue 7's report).
"""
from __future__ import annotations

import random

from sliceserve.config import SchedulerConfig
from sliceserve.core.annealing import AnnealParams, AnnealResult, Job, OutputLengthEstimator, SearchProblem, anneal
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch
from sliceserve.request import Request, RequestStatus


@register("annealing")
class AnnealingScheduler(Policy):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        cfg = self.config
        self.lengths = OutputLengthEstimator(cfg.annealing_default_output_len)
        self.params = AnnealParams(cfg.annealing_iterations, cfg.annealing_t0, cfg.annealing_cooling,
                                   cfg.annealing_batch_move_prob)
        self._rng = random.Random(cfg.annealing_seed)
        self._order: list[str] = []          # waiting req_ids in admission order (the searched state)
        self.batch_size = cfg.max_num_seqs    # the searched batch size
        self._dirty = False
        self.num_searches = 0
        self.last_result: AnnealResult | None = None

    # --- triggers ---------------------------------------------------------------------------------------
    def on_arrival(self, req: Request, now: float) -> None:
        self._dirty = True

    def on_finish(self, req: Request, now: float) -> None:
        self.lengths.observe(req)
        self._dirty = True

    # --- search -----------------------------------------------------------------------------------------
    def _sync_order(self) -> None:
        """Keep the previous order of requests still waiting; append the others in queue order."""
        waiting_ids = {r.req_id for r in self.waiting}
        kept = [rid for rid in self._order if rid in waiting_ids]
        known = set(kept)
        self._order = kept + [r.req_id for r in self.waiting if r.req_id not in known]

    def _job(self, req: Request) -> Job:
        first = req.token_times_s[0] if req.token_times_s else None
        uncomputed = req.num_uncomputed_tokens
        decoding = req.status is not RequestStatus.WAITING and uncomputed <= 1
        return Job(req.arrival_s, 0.0 if decoding else self.latency.prefill_time(uncomputed, req.num_computed_tokens),
                   self.lengths.remaining(req), req.slo, first, decoding)

    def search(self, now: float) -> None:
        """Re-run the annealing search from the current (warm) state."""
        self._sync_order()
        window = self.config.annealing_window
        head, tail = self._order[:window], self._order[window:]
        reqs = self.requests
        considered = self.running + [reqs[rid] for rid in head]
        ctx = sum(r.num_tokens for r in considered) / len(considered) if considered else 0.0
        problem = SearchProblem(now, [self._job(r) for r in self.running], [self._job(reqs[rid]) for rid in head],
                                self.latency, self.config.max_num_seqs, ctx)
        result = anneal(problem, list(range(len(head))), self.batch_size, self.params, self._rng)
        self._order = [head[i] for i in result.order] + tail
        self.batch_size = result.batch_size
        self.last_result = result
        self.num_searches += 1
        self._dirty = False

    @property
    def order(self) -> list[str]:
        """The current admission order of waiting requests (req_ids)."""
        return list(self._order)

    # --- one iteration ----------------------------------------------------------------------------------
    def plan(self, now: float) -> Batch:
        if self._dirty or len(self._order) != len(self.waiting) or {r.req_id for r in self.waiting} != set(self._order):
            self.search(now)
        batch = Batch()
        budget = self.config.max_num_batched_tokens
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_uncomputed_tokens, budget)
            while not self.reserve(req, req.num_computed_tokens + n):
                victim = self.running[-1]  # newest, never one already in this batch (those sit before i)
                self.preempt_recompute(victim)
                preempted = True
                if victim is req:
                    break
            else:
                batch.add_prefill(req, n) if req.is_prefilling else batch.add_decode(req)
                budget -= n
                i += 1
        if preempted:
            # The victim waits again: `order` stays an exact view of the queue, and the next plan searches.
            self._sync_order()
            self._dirty = True
            return batch
        limit = min(self.batch_size, self.config.max_num_seqs)
        admitted = 0
        for rid in self._order:
            if budget <= 0 or len(self.running) >= limit:
                break
            req = self.requests[rid]
            n = min(req.num_uncomputed_tokens, budget)
            if not self.reserve(req, req.num_computed_tokens + n):
                break  # strict order: the head keeps its place until memory frees up
            self.start(req)
            batch.add_prefill(req, n)
            budget -= n
            admitted += 1
        del self._order[:admitted]
        return batch
