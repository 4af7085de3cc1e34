"""vLLM-style scheduling (Kwon et al., SOSP'23; vLLM v1's scheduler): the practical default.

- Running requests first, in order: each gets what it still needs (1 token for a decode, a chunk of the
  prompt otherwise) within the per-iteration token budget `max_num_batched_tokens` (chunked prefill).
- Then waiting requests, FCFS (`vllm_mode="fcfs"`) or by (priority, arrival) (`vllm_mode="priority"`),
  until the budget or `max_num_seqs` runs out. Waiting requests are not admitted in an iteration that
  had to preempt (memory is short).
- When KV runs out, preempt by recompute: the newest running request (fcfs), or the one with the largest
  (priority, arrival) (priority mode), chosen among those not yet in this iteration's batch.
"""
from __future__ import annotations

from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch
from sliceserve.request import Request


@register("vllm")
class VLLMScheduler(Policy):
    def _waiting_head(self) -> Request:
        if self.config.vllm_mode == "priority":
            return min(self.waiting, key=lambda r: (r.priority, r.arrival_s))
        return self.waiting[0]

    def _victim(self, candidates: list[Request]) -> Request:
        if self.config.vllm_mode == "priority":
            return max(candidates, key=lambda r: (r.priority, r.arrival_s))
        return candidates[-1]

    def plan(self, now: float) -> Batch:
        batch = Batch()
        budget = self.config.max_num_batched_tokens
        allocate = self.kv.allocate  # the hot loop runs once per running request per iteration
        running = self.running
        prefill, decode = batch.prefill, batch.decode
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            missing = len(req.prompt_token_ids) + len(req.output_token_ids) - computed
            n = missing if missing < budget else budget
            while not allocate(req.req_id, computed + n):
                victim = self._victim(running[i:])
                self.preempt_recompute(victim)
                preempted = True
                if victim is req:
                    break
            else:
                if missing > 1:  # a prompt chunk or a recompute
                    prefill[req.req_id] = n
                else:
                    decode.append(req.req_id)
                budget -= n
                i += 1
        batch.num_tokens = self.config.max_num_batched_tokens - budget
        if preempted:
            return batch
        while self.waiting and budget > 0 and len(running) < self.config.max_num_seqs:
            req = self._waiting_head()
            n = min(req.num_uncomputed_tokens, budget)
            if not self.reserve(req, req.num_computed_tokens + n):
                break
            self.start(req)
            batch.add_prefill(req, n) if req.is_prefilling else batch.add_decode(req)
            budget -= n
        return batch
