"""QoServe / Niyama (Goel et al., "Niyama: Breaking the Silos of LLM Inference Serving", arXiv 2503.22562,
2025; the system was later presented as QoServe). Reported: 32% more serving capacity than siloed
deployments and an order of magnitude fewer SLO violations under extreme load; the issue cites ~2.4x
goodput over Sarathi-Serve. Three mechanisms on top of chunked-prefill continuous batching:

- Hybrid prioritisation: prefill candidates (running prompts still prefilling and waiting requests) are
  served in order of deadline + alpha x predicted remaining prefill time (`qoserve_alpha`). alpha = 0 is
  pure earliest-deadline-first; a larger alpha lets short prompts with nearby deadlines go first, the
  blend of EDF and shortest-remaining-prefill that the paper argues balances fairness and efficiency.
- Eager relegation under overload: walking that order, a request whose first token is predicted past
  its TTFT deadline (its own prefill plus everything ahead of it, plus a decode step per chunk) is
  relegated: it goes behind every non-relegated request for good, and is served only from capacity those
  leave over. Its predicted work is not charged to the requests behind it, which can then still make it.
  Nothing is relegated while every deadline is predicted to hold (light load).
- Dynamic chunking: the prefill budget of an iteration is the largest chunk that keeps every decode on
  its own TPOT line (next deadline = first token + n x TPOT), using the slack each decode actually has
  rather than one fixed TPOT: decodes ahead of schedule let a bigger chunk through.

Choices where the paper is silent:
- The latency model stands in for the paper's execution-time predictor.
- Every running decode decodes every iteration (Sarathi-style). A decode already past its line (slack
  smaller than the decode step) sets no bound: no chunk can save it. Floor `sarathi_min_chunk` tokens.
- A relegated request keeps its flag once admitted; `qoserve_relegate` = False turns relegation off.
- KV shortage: the running request with the worst key (relegated first) not yet in the batch is
  preempted by recompute; an iteration that preempts admits nobody.
"""
from __future__ import annotations

import math

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import register
from sliceserve.core.policies.sarathi import SarathiScheduler
from sliceserve.core.scheduler import Batch
from sliceserve.core.sliding.sorter import next_deadline_s
from sliceserve.request import Request, RequestStatus
from sliceserve.slo import FLOAT_SLACK_S


@register("qoserve")
class QoServeScheduler(SarathiScheduler):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        self.relegated: set[str] = set()

    def key(self, req: Request) -> tuple[bool, float, float]:
        """Hybrid priority; smaller runs first."""
        return (req.req_id in self.relegated,
                next_deadline_s(req) + self.config.qoserve_alpha * self.latency.prefill_time(req.num_uncomputed_tokens,
                                                                                     req.num_computed_tokens),
                req.arrival_s)

    def dynamic_budget(self, now: float, decodes: list[Request]) -> int:
        """Largest prefill chunk that keeps every decode that can still make its next TPOT deadline."""
        cap = max(0, self.config.max_num_batched_tokens - len(decodes))
        if not decodes:
            return cap
        ctx = sum(r.num_computed_tokens for r in decodes) / len(decodes)
        decode_s = self.latency.decode_time(len(decodes), ctx)
        slacks = [s for s in (next_deadline_s(r) - now for r in decodes if r.slo.tpot_s is not None)
                  if s > decode_s]
        if not slacks:
            return cap
        room = min(slacks) - decode_s
        lo, hi = 0, cap
        while lo < hi:  # prefill_time is non-decreasing in n
            mid = (lo + hi + 1) // 2
            if self.latency.prefill_time(mid) <= room:
                lo = mid
            else:
                hi = mid - 1
        return min(cap, max(lo, self.config.sarathi_min_chunk))

    def _relegate(self, now: float, candidates: list[Request], decodes: list[Request], budget: int) -> None:
        """Eager relegation: flag every candidate whose TTFT is predicted lost given the work ahead of it."""
        k = len(decodes)
        ctx = sum(r.num_computed_tokens for r in decodes) / k if k else 0.0
        step_s = self.latency.decode_time(k, ctx)
        chunk = max(1, budget)
        ahead_tokens, ahead_s = 0, 0.0
        for req in candidates:
            if req.req_id in self.relegated:
                continue
            own_s = self.latency.prefill_time(req.num_uncomputed_tokens, req.num_computed_tokens)
            tokens = ahead_tokens + req.num_uncomputed_tokens
            first_s = now + ahead_s + own_s + step_s * math.ceil(tokens / chunk)
            ttft = req.slo.ttft_s
            if ttft is not None and not req.output_token_ids and first_s > req.ttft_deadline_s + FLOAT_SLACK_S:
                self.relegated.add(req.req_id)
                self.num_violation_risks += 1
                continue
            ahead_tokens, ahead_s = tokens, ahead_s + own_s

    def _reserve_or_preempt(self, req: Request, num_tokens: int, scheduled: set[str]) -> bool:
        while not self.reserve(req, num_tokens):
            victim = max((r for r in self.running if r.req_id not in scheduled), key=self.key)
            self.preempt_recompute(victim)
            if victim is req:
                return False
        return True

    def plan(self, now: float) -> Batch:
        batch = Batch()
        scheduled: set[str] = set()
        preempted = False
        for req in sorted((r for r in self.running if not r.is_prefilling), key=self.key):
            if req.status is not RequestStatus.RUNNING:
                continue
            if self._reserve_or_preempt(req, req.num_computed_tokens + 1, scheduled):
                batch.add_decode(req)
                scheduled.add(req.req_id)
            else:
                preempted = True
        decodes = [self.requests[rid] for rid in batch.decode]
        budget = self.dynamic_budget(now, decodes)
        candidates = sorted([r for r in self.running if r.is_prefilling and r.status is RequestStatus.RUNNING]
                            + self.waiting, key=self.key)
        if self.config.qoserve_relegate:
            self._relegate(now, candidates, decodes, budget)
            candidates.sort(key=self.key)
        for req in candidates:
            if budget <= 0:
                break
            if req.status is RequestStatus.WAITING:
                if preempted or len(self.running) >= self.config.max_num_seqs:
                    continue  # slots full: a running prompt further down may still use the budget
                n = min(req.num_uncomputed_tokens, budget)
                if not self.reserve(req, req.num_computed_tokens + n):
                    preempted = True  # memory short: nobody else is admitted this iteration
                    continue
                self.start(req)
            elif req.status is RequestStatus.RUNNING:
                n = min(req.num_uncomputed_tokens, budget)
                if not self._reserve_or_preempt(req, req.num_computed_tokens + n, scheduled):
                    preempted = True
                    continue
            else:
                continue
            batch.add_prefill(req, n)
            scheduled.add(req.req_id)
            budget -= n
        return batch

    def on_finish(self, req: Request, now: float) -> None:
        self.relegated.discard(req.req_id)
