"""Sarathi-Serve (Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with
Sarathi-Serve", OSDI'24): stall-free batching with chunked prefills.

Every iteration:
1. Every running request that decodes gets its one token (decodes are never stalled by prefills).
2. The prefill token budget is chosen so that this iteration stays within the tightest (attainable) TPOT
   SLO of the requests decoding in it: the largest chunk c with
       decode_time(k, ctx) + prefill_time(c) <= min TPOT
   under the scheduler's LatencyModel (k decodes, ctx their mean cached context, as the executor
   measures it). The paper fixes one token budget per deployment from profiling against a TBT SLO; we
   recompute it per iteration from the live latency model, which is the same rule applied online.
3. The budget is spent on partly done prefills first (running requests still prefilling, in admission
   order), then on new prefills from the waiting queue, FCFS, up to `max_num_seqs` running requests.
4. When KV runs out, the newest running request not yet in this iteration's batch is preempted by
   recompute (vLLM's rule; Sarathi-Serve is implemented on top of vLLM); no admission in such an
   iteration.

Choices where the paper is silent, all config fields:
- `sarathi_min_chunk` (default 32 tokens): floor of the prefill budget, so prefills still progress when
  the decodes alone already use up the TPOT (otherwise a prompt could wait forever behind a TPOT that
  the decode batch itself breaks). A TPOT below decode_time + prefill_time(floor) is then exceeded.
- Only requests that decode in this iteration set the TPOT: a request still prefilling emits no token
  gap that the chunk could stretch (its first token is a TTFT matter).
- TPOT bounds that the decode batch alone already exceeds (decode_time(k, ctx) >= TPOT) are left out:
  no chunk keeps them, and the paper's budget assumes a deployment where the SLO is attainable. With
  them included, an overloaded edge device fell to the floor chunk every iteration and its throughput
  collapsed (edge-mix at 1 req/s on paper-4060ti: attainment 0.36 vs vLLM's 0.43 before this rule).
- Without any TPOT SLO in the decode set the budget is `max_num_batched_tokens` (the paper's fixed
  budget, which here is the engine's token cap).
- The total tokens of an iteration (decodes + chunk) never exceed `max_num_batched_tokens`.
"""
from __future__ import annotations

from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch
from sliceserve.request import Request, RequestStatus


@register("sarathi")
class SarathiScheduler(Policy):
    def prefill_budget(self, decodes: list[Request]) -> int:
        """Prefill tokens allowed alongside `decodes` this iteration (see the module docstring)."""
        cap = max(0, self.config.max_num_batched_tokens - len(decodes))
        bounds = [r.slo.tpot_s for r in decodes if r.slo.tpot_s is not None]
        if not bounds:
            return cap
        k = len(decodes)
        ctx = sum(r.num_computed_tokens for r in decodes) / k
        decode_s = self.latency.decode_time(k, ctx)
        # Bounds the decodes alone already break cannot be kept by any chunk: shrinking it would only cost
        # throughput, so they are left out (see the module docstring).
        keepable = [b for b in bounds if b > decode_s]
        if not keepable:
            return cap
        slack = min(keepable) - decode_s
        # prefill_time is non-decreasing in n (non-negative coefficients), so bisect for the largest fit.
        lo, hi = 0, cap
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.latency.prefill_time(mid) <= slack:
                lo = mid
            else:
                hi = mid - 1
        return min(cap, max(lo, self.config.sarathi_min_chunk))

    def _reserve_or_preempt(self, req: Request, num_tokens: int, scheduled: set[str]) -> bool:
        """Reserve KV for `req`, preempting the newest unscheduled running requests as needed.
        False when `req` itself had to go."""
        while not self.reserve(req, num_tokens):
            victim = [r for r in self.running if r.req_id not in scheduled][-1]
            self.preempt_recompute(victim)
            if victim is req:
                return False
        return True

    def _running_prefills(self, batch: Batch, scheduled: set[str]) -> tuple[int, bool]:
        """Prompt chunks of running requests within the token budget the batch's decodes leave; returns the
        budget left and whether a request had to be preempted for KV."""
        budget = self.prefill_budget([self.requests[rid] for rid in batch.decode])
        preempted = False
        for req in [r for r in self.running if r.is_prefilling]:
            if budget <= 0:
                break
            if req.status is not RequestStatus.RUNNING:
                continue
            n = min(req.num_uncomputed_tokens, budget)
            if self._reserve_or_preempt(req, req.num_computed_tokens + n, scheduled):
                batch.add_prefill(req, n)
                scheduled.add(req.req_id)
                budget -= n
            else:
                preempted = True
        return budget, preempted

    def plan(self, now: float) -> Batch:
        batch = Batch()
        scheduled: set[str] = set()
        preempted = False
        for req in [r for r in self.running if not r.is_prefilling]:
            if req.status is not RequestStatus.RUNNING:
                continue  # preempted by an earlier request of this loop
            if self._reserve_or_preempt(req, req.num_computed_tokens + 1, scheduled):
                batch.add_decode(req)
                scheduled.add(req.req_id)
            else:
                preempted = True
        budget, cut = self._running_prefills(batch, scheduled)
        preempted = preempted or cut
        if preempted:
            return batch
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            n = min(req.num_uncomputed_tokens, budget)
            if not self.reserve(req, req.num_computed_tokens + n):
                break
            self.start(req)
            # Always a prefill entry, even for a 1-token prompt: it still reaches the end and samples.
            batch.add_prefill(req, n)
            scheduled.add(req.req_id)
            budget -= n
        return batch
