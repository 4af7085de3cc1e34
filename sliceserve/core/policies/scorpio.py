"""SCORPIO (Tang et al., "SCORPIO: Serving the Right Requests at the Right Time for Heterogeneous SLOs in
LLM Inference", arXiv 2505.23022, 2025). Reported: up to 14.4x goodput and +46.5% SLO adherence over
the best baselines. Two guards, both driven by the latency model (the paper's analytical predictor):

TTFT guard
- Least-deadline-first: waiting requests are ordered by their next deadline (arrival + TTFT before the
  first token; a preempted request's next TPOT deadline), ties by arrival.
- Rejection of unattainable requests: walking that order, each never-started request's first token is
  predicted as now + the prefill time of itself and every kept request ahead of it + one decode step per
  chunk those prompts need; if that is past its TTFT deadline it is refused at once (`Scheduler.reject`,
  finish reason REJECTED: the client gets its answer now, not after a queue timeout) and its work is not
  charged to the requests behind it.

TPOT guard
- Virtual batch size (VBS) admission: with credit-based batching a request of TPOT t decodes in a share
  min(1, T / t) of iterations of length T, so the effective (virtual) batch is the sum of those shares and
  T = decode_time(ceil(VBS)) (a fixed point, `virtual_step_s`). A waiting request is admitted only while
  that T, with it included, stays within the tightest TPOT of the batch (less `scorpio_margin`); the head
  of the LDF queue is not overtaken (else tight-TPOT requests starve behind loose ones).
- Credit-based batching: after every iteration each decoding request earns elapsed / (t * (1 - margin))
  credits; a request decodes in an iteration when it holds >= 1 credit, which costs one. So a loose-TPOT
  request skips iterations it does not need and the batch the tight ones share stays small.

Choices where the paper is silent (config fields in parentheses, defaults in config.py):
- The latency model stands in for the paper's predictor; the output-length predictor (a fine-tuned
  OPT-125M there) is left out: the simulator's requests carry max_tokens only and the guards above only
  need per-iteration times.
- A request without a TPOT SLO always holds a credit (decodes every iteration). New decodes start with
  one credit; banked credit is capped (`scorpio_credit_cap`) so a starved request catches up in a short
  burst, not by hogging the batch.
- Work conservation: when no decode holds a credit and no prefill runs, every decode runs (an empty
  iteration would only idle the device, and credits are earned from executed time).
- Prefill chunks: Sarathi-Serve's rule (the largest chunk keeping the tightest TPOT of the iteration's
  decodes, floor `sarathi_min_chunk`), spent on running prefills first, then waiting ones in LDF order.
- KV shortage: the running request with the latest deadline that is not yet in the batch is preempted
  by recompute. `scorpio_reject` = False keeps the order and admission but rejects nothing.
"""
from __future__ import annotations

import math

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.policies import register
from sliceserve.core.policies.sarathi import SarathiScheduler
from sliceserve.core.scheduler import Batch
from sliceserve.core.sliding.sorter import next_deadline_s
from sliceserve.request import Request, RequestStatus
from sliceserve.slo import FLOAT_SLACK_S


def virtual_step_s(latency: LatencyModel, tpots: list[float | None], ctx: float, rounds: int = 6) -> float:
    """Decode-step time T of a credit-batched set of requests: T = decode_time(ceil(sum min(1, T/t_i))).
    Iterated from the full batch downwards; the share of each request only falls as T falls."""
    if not tpots:
        return 0.0
    step = latency.decode_time(len(tpots), ctx)
    for _ in range(rounds):
        vbs = sum(1.0 if t is None else min(1.0, step / t) for t in tpots)
        new = latency.decode_time(max(1, math.ceil(vbs - 1e-9)), ctx)
        if abs(new - step) < 1e-9:
            break
        step = new
    return step


@register("scorpio")
class ScorpioScheduler(SarathiScheduler):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        self.credit: dict[str, float] = {}
        self.num_rejected = 0

    # --- TTFT guard ----------------------------------------------------------------------------------
    def _ldf(self, reqs: list[Request]) -> list[Request]:
        return sorted(reqs, key=lambda r: (next_deadline_s(r), r.arrival_s))

    def _guard_ttft(self, now: float, decodes: list[Request]) -> list[Request]:
        """The waiting queue in LDF order, without the requests refused because their TTFT is infeasible."""
        queue = self._ldf(self.waiting)
        if not self.config.scorpio_reject:
            return queue
        k = len(decodes)
        ctx = sum(r.num_computed_tokens for r in decodes) / k if k else 0.0
        step_s = self.latency.decode_time(k, ctx)
        chunk = max(1, self.prefill_budget(decodes)) if decodes else self.config.max_num_batched_tokens
        # Work already committed ahead of every waiting request: running prompts still prefilling, each priced
        # with its attention over the part it has cached (a long prompt's rest costs more than a fresh one).
        prefilling = [r for r in self.running if r.is_prefilling]
        ahead_tokens = sum(r.num_uncomputed_tokens for r in prefilling)
        ahead_s = sum(self.latency.prefill_time(r.num_uncomputed_tokens, r.num_computed_tokens) for r in prefilling)
        kept = []
        for req in queue:
            own_s = self.latency.prefill_time(req.num_uncomputed_tokens, req.num_computed_tokens)
            tokens = ahead_tokens + req.num_uncomputed_tokens
            first_s = now + ahead_s + own_s + step_s * math.ceil(tokens / chunk)
            ttft = req.slo.ttft_s
            if ttft is not None and not req.output_token_ids and first_s > req.ttft_deadline_s + FLOAT_SLACK_S:
                self.reject(req, now, f"TTFT: first token predicted "
                                      f"{first_s - req.arrival_s:.3f} s after arrival, bound {ttft:.3f} s")
                self.num_rejected += 1
                continue
            ahead_tokens, ahead_s = tokens, ahead_s + own_s
            kept.append(req)
        return kept

    # --- TPOT guard ----------------------------------------------------------------------------------
    def _admissible(self, req: Request) -> bool:
        """VBS admission: the credit-batched decode step with `req` keeps the tightest TPOT of the batch."""
        members = self.running + [req]
        tpots = [r.slo.tpot_s for r in members]
        bounds = [t for t in tpots if t is not None]
        if len(members) == 1 or not bounds:
            return True
        ctx = sum(r.num_tokens for r in members) / len(members)
        return virtual_step_s(self.latency, tpots, ctx) <= min(bounds) * (1.0 - self.config.scorpio_margin)

    def _credited(self, decodes: list[Request]) -> list[Request]:
        return [r for r in decodes if r.slo.tpot_s is None or self.credit.get(r.req_id, 1.0) >= 1.0 - 1e-9]

    def _add_decodes(self, batch: Batch, reqs: list[Request], scheduled: set[str]) -> bool:
        """Reserve and add each decode (one credit each); False if a KV shortage preempted someone."""
        ok = True
        for req in reqs:
            if req.status is not RequestStatus.RUNNING or req.req_id in scheduled:
                continue
            if self._reserve_or_preempt(req, req.num_computed_tokens + 1, scheduled):
                batch.add_decode(req)
                scheduled.add(req.req_id)
                self.credit[req.req_id] = max(0.0, self.credit.get(req.req_id, 1.0) - 1.0)
            else:
                ok = False
        return ok

    # --- the iteration -------------------------------------------------------------------------------
    def plan(self, now: float) -> Batch:
        batch = Batch()
        scheduled: set[str] = set()
        # Latest deadline first out on a KV shortage: order the running list's victims by deadline.
        self.running.sort(key=lambda r: (next_deadline_s(r), r.arrival_s))
        decodes = [r for r in self.running if not r.is_prefilling]
        queue = self._guard_ttft(now, decodes)
        preempted = not self._add_decodes(batch, self._credited(decodes), scheduled)
        budget, cut = self._running_prefills(batch, scheduled)
        preempted = preempted or cut
        for req in queue:
            if preempted or budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                break
            if req.status is not RequestStatus.WAITING or not self._admissible(req):
                break  # the LDF head waits for the batch to shrink; nobody overtakes it
            n = min(req.num_uncomputed_tokens, budget)
            if not self.reserve(req, req.num_computed_tokens + n):
                break
            self.start(req)
            batch.add_prefill(req, n)
            scheduled.add(req.req_id)
            budget -= n
        if not batch.num_seqs:
            # Work-conserving: nobody needs the step, so nobody is kept out of it (an empty iteration
            # would idle the device, and credits only grow with executed time).
            self._add_decodes(batch, decodes, scheduled)
        return batch

    # --- credits -------------------------------------------------------------------------------------
    def observe_iteration(self, sched: SchedulerOutput, result: ModelOutput, now: float) -> None:
        super().observe_iteration(sched, result, now)
        if result.elapsed_s <= 0:
            return
        keep = 1.0 - self.config.scorpio_margin
        cap = self.config.scorpio_credit_cap
        for r in self.running:
            tpot = r.slo.tpot_s
            if tpot is None or r.is_prefilling or r.status is not RequestStatus.RUNNING:
                continue
            self.credit[r.req_id] = min(cap, self.credit.get(r.req_id, 1.0) + result.elapsed_s / (tpot * keep))

    def on_finish(self, req: Request, now: float) -> None:
        self.credit.pop(req.req_id, None)
