"""Orca: iteration-level FCFS scheduling (Yu et al., "Orca: A Distributed Serving System for
Transformer-Based Generative Models", OSDI'22, section 4.2 and Algorithm 1).

Orca's contribution is iteration-level scheduling: the batch is rebuilt every iteration, so a request
that finishes leaves at once and a new one joins at the next iteration. Its selection rule (Algorithm 1)
walks the request pool in arrival order and is reproduced here:

- Batch size: at most `config.max_num_seqs` requests run at once (the paper's `max_bs`; this project's
  edge default is 16, PEERS.md).
- Admission with worst-case reservation: a new request is admitted only if KV for its prompt plus
  `max_tokens` fits in the free cache, and that whole amount is reserved at admission (the paper reserves
  `max_tokens` slots per request, so a running request can never run out of memory).
- Strict FCFS: when the oldest waiting request does not fit, admission stops for this iteration
  (Algorithm 1 `break`s); younger, smaller requests do not overtake it.
- No chunking: an admitted prompt is prefilled whole in one iteration, batched with the running decodes
  (Orca's selective batching). `max_num_batched_tokens` is therefore not applied; the prompt length is
  bounded by `max_model_len` at admission instead. The paper has no token budget.
- Every running request decodes every iteration. Orca never preempts and has no priorities; the
  reservation makes preemption unnecessary.
"""
from __future__ import annotations

from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch


@register("orca")
class OrcaScheduler(Policy):
    def plan(self, now: float) -> Batch:
        batch = Batch()
        for req in self.running:
            # Running requests hold their worst case already; an admitted prompt finished its prefill in
            # its first iteration unless that iteration failed (then the request ended).
            n = req.num_uncomputed_tokens
            if n > 1:
                batch.add_prefill(req, n)
            else:
                batch.add_decode(req)
        kv = self.kv
        waiting = self.waiting
        max_seqs = self.config.max_num_seqs
        while waiting and len(self.running) < max_seqs:
            req = waiting[0]
            if not kv.allocate(req.req_id, req.max_total_tokens):
                break  # strict FCFS: the oldest request waits for memory, nobody overtakes it
            self.start(req)
            batch.add_prefill(req, req.num_uncomputed_tokens)
        return batch
