"""SLICE: SLO-driven scheduling for LLM inference on edge devices (arXiv 2510.18544; SLICE.md).

Phase 1 (selection, `sliceserve.core.slice.selection`): every request gets a demand v_i = ceil(P / tpot_i)
decode steps per cycle of P seconds. Candidates (running, paused and waiting) are ranked by utility
density U_i / v_i (the paper's U_i * tpot_i up to the ceiling: value per unit of decode rate, which is
what a knapsack on cycle time should be greedy on), ties by earliest deadline, then arrival. The walk
admits a candidate if the exact cycle time of the decode mask, plus the prefill of members not yet
prefilled, stays <= P * (1 - margin), its worst-case KV fits beside the other members', and its first
token can still come within its TTFT. Unselected requests ride best effort in the time left over.
Phase 2 (`sliceserve.core.slice.mask`): the decode mask; each `plan()` runs its next column, plus prefill
chunks of rows still prefilling, within `max_num_batched_tokens`; after the last column it wraps.
Feedback (`sliceserve.core.slice.feedback`): lag boosts, catch-up rates, drift rebuilds, risk counting.

Parameters (SchedulerConfig), with the defaults and why:
- `slice_period_s` = 1.0: the paper's cycle P.
- `slice_margin` = 0.05: headroom for latency-model error and mixed-iteration overhead.
- `slice_layout` = "prefix" (the paper's) | "spread" (even inter-token gaps).
- `slice_misfit` = "skip" (SLICE.md) | "stop" (the reference code: stop the walk at the first request
  that does not fit the cycle or the KV; requests whose TTFT already cannot be met are always skipped).
- `slice_min_rate` = 1: demand of requests without a TPOT SLO. An e2e-only request demands the rate that
  finishes it by its deadline, at least this.
- `slice_feedback` = True: lag boosts, catch-up rates and drift rebuilds (risk counting stays on).
- Utilities: `Request.utility` (real-time class 100, others 1: `sliceserve.slo.BUILTIN_CLASSES`).
Rebuilds are lazy: only after an arrival, finish, abort, eviction, drift or lag.
"""
from __future__ import annotations

import math

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import register
from sliceserve.core.scheduler import Batch, Scheduler
from sliceserve.core.slice.feedback import SliceFeedback, rate_for
from sliceserve.core.slice.selection import Candidate, Selection, SelectionParams, demand, select
from sliceserve.request import FinishReason, Request, RequestStatus


# Smallest prompt chunk worth an iteration's fixed prefill cost (unless it finishes the prompt).
_MIN_CHUNK = 16


@register("slice")
class SliceScheduler(Scheduler):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        cfg = self.config
        self.cap_s = cfg.slice_period_s * (1.0 - cfg.slice_margin)
        self.params = SelectionParams(cfg.slice_period_s, cfg.slice_margin, cfg.slice_layout, cfg.slice_misfit,
                                      cfg.max_num_seqs, cfg.num_kv_blocks, cfg.max_num_batched_tokens)
        self.feedback = SliceFeedback(cfg.slice_period_s)
        self.selection: Selection | None = None
        self.num_rebuilds = 0
        self._dirty = True
        self._wrapped = False
        self._columns: list[list[str]] = []
        self._col = 0
        self._members: dict[str, int] = {}        # selected req_id -> base demand
        self._prefilling: list[str] = []          # rows with prompt/recompute left, rank order
        # Prefill credit (a token bucket, in seconds): the selection test counts a newcomer's prefill once
        # per cycle, but rebuilds restart the cycle, so without a bucket back-to-back arrivals would spend
        # the slack many times over and push members past their TPOT. Each executed column earns
        # slack / C; prefill next to members' decodes spends it; the bucket holds one cycle's slack.
        self._credit_s = 0.0
        self._slack_s = 0.0

    # --- rebuild triggers ----------------------------------------------------------------------------
    def on_arrival(self, req: Request, now: float) -> None:
        self._dirty = True

    def on_finish(self, req: Request, now: float) -> None:
        self._dirty = True
        self.feedback.forget(req.req_id)

    def abort(self, req_id: str, now: float, reason: FinishReason = FinishReason.ABORT,
              error: str | None = None) -> Request | None:
        req = super().abort(req_id, now, reason, error)
        if req is not None:
            self.on_finish(req, now)
        return req

    def observe_iteration(self, sched, result, now: float) -> None:  # type: ignore[override]
        super().observe_iteration(sched, result, now)
        if self.config.slice_feedback and result.elapsed_s > 0 and self.feedback.observe(result.elapsed_s):
            self._dirty = True

    # --- phase 1 -------------------------------------------------------------------------------------
    def _candidate(self, req: Request, now: float) -> Candidate:
        cfg, slo = self.config, req.slo
        base = demand(slo.tpot_s, cfg.slice_period_s, cfg.slice_min_rate)
        feasible = True
        if slo.tpot_s is None and slo.e2e_s is not None:
            allowed = req.arrival_s + slo.e2e_s - now
            feasible = allowed > 0
            if feasible:
                base = max(base, rate_for(max(1, req.remaining_output_tokens), allowed, self.cap_s))
        rate: int | None = base
        if cfg.slice_feedback and feasible:
            rate = self.feedback.required_rate(req, now, base, self.cap_s)
        if rate is None:
            rate, feasible = base, False
        if slo.ttft_s is not None and req.num_output_tokens == 0 and now > req.arrival_s + slo.ttft_s:
            feasible = False
        if rate * self.latency.decode_time(1) > self.cap_s:  # cannot go that fast even alone
            rate, feasible = max(1, math.floor(self.cap_s / self.latency.decode_time(1))), False
        if not feasible and not slo.is_empty:
            self.feedback.flag(req, "SLO can no longer be met")
        # A fixed deadline per request (not one that moves once the first token is out), so equal-density
        # ties keep favouring the request that arrived first: a running one is not displaced by its twin.
        bounds = [b for b in (slo.ttft_s, slo.e2e_s) if b is not None]
        if not bounds and slo.tpot_s is not None:
            bounds = [slo.tpot_s * req.max_tokens]
        uncomputed = req.num_uncomputed_tokens
        needs_prefill = uncomputed > 1 or req.status is RequestStatus.WAITING
        return Candidate(
            req=req, rate=rate, density=req.utility / base,
            deadline=req.arrival_s + min(bounds) if bounds else math.inf,
            blocks=self.kv.blocks_for(req.max_total_tokens),
            now_blocks=self.kv.blocks_for(req.num_tokens + 1),
            prefill_tokens=uncomputed if needs_prefill else 0,
            ctx=req.num_tokens + rate / 2, feasible=feasible)

    def _rebuild(self, now: float) -> None:
        self.num_rebuilds += 1
        cands = [self._candidate(r, now) for r in self.running]
        cands += [self._candidate(r, now) for r in self.waiting]
        cands.sort(key=lambda c: c.sort_key)
        sel = select(cands, self.params, self.latency, now, credit_s=self._credit_s)
        for c in sel.ttft_misses:
            self.feedback.flag(c.req, "TTFT unreachable")
        members = {c.req.req_id: c.rate for c in sel.selected}
        for rid in self._members.keys() - members.keys():
            req = self.requests.get(rid)
            if req is not None and req.slo.tpot_s is not None:
                self.feedback.flag(req, "dropped from the selection")
        rows = sel.mask.rows
        for req in self.running:
            if req.req_id in rows:
                if req.status is RequestStatus.PAUSED:
                    self.resume(req)
            elif req.status is RequestStatus.RUNNING:
                self.pause(req)
        self.selection = sel
        self._members = members
        self._prefilling = [c.req.req_id for c in sel.selected + sel.best_effort if c.prefill_tokens]
        self._columns = sel.mask.columns()
        self._slack_s = max(0.0, self.cap_s - sel.mask.cost())
        # Newly selected members' prefill was budgeted inside this cycle by the selection test: grant it
        # now, so their first token is not held back by the slow per-column refill.
        self._credit_s = max(min(self._credit_s, self._slack_s), sel.member_prefill_s)
        # Keep the position instead of restarting at column 0: rebuilds come every few iterations under
        # load, and restarting would keep replaying the fullest (first, in `prefix`) columns, so members
        # would see those columns' iteration time rather than the cycle average the test budgeted.
        self._col = self._col % len(self._columns) if self._columns else 0
        self.feedback.start_cycle(len(self._columns))
        self.num_violation_risks = self.feedback.num_risks
        self._dirty = False

    def _check_lag(self) -> None:
        """At the end of each full cycle: selected requests behind their TPOT get a boost (-> rebuild)."""
        for rid in self._members:
            req = self.requests.get(rid)
            if req is not None and self.feedback.check_lag(
                    req, demand(req.slo.tpot_s, self.config.slice_period_s, self.config.slice_min_rate)):
                self._dirty = True
        self.num_violation_risks = self.feedback.num_risks

    # --- phase 2 -------------------------------------------------------------------------------------
    def plan(self, now: float) -> Batch:
        if self._wrapped and self.config.slice_feedback:
            self._check_lag()
        self._wrapped = False
        if self._dirty:
            self._rebuild(now)
        num_cols = len(self._columns)
        for _ in range(num_cols):
            col = self._columns[self._col]
            self._col += 1
            if self._col == num_cols:
                self._col, self._wrapped = 0, True
            batch = self._fill(col)
            if batch.num_seqs:
                return batch
        return Batch()

    def _fill(self, col: list[str]) -> Batch:
        batch, in_batch = Batch(), set()
        budget, max_seqs = self.config.max_num_batched_tokens, self.config.max_num_seqs
        for rid in col:
            req = self.requests.get(rid)
            if req is None or req.num_uncomputed_tokens != 1 or budget <= 0:
                continue
            if self._admit(req, req.num_computed_tokens + 1, in_batch):
                batch.add_decode(req)
                in_batch.add(rid)
                budget -= 1
        protected = any(rid in self._members for rid in batch.decode)
        if self._columns:
            self._credit_s = min(self._slack_s, self._credit_s + self._slack_s / len(self._columns))
        # Without member decodes in the batch nobody's TPOT is at stake: prefill freely. With them, spend
        # the credit; a full bucket may overdraw once so a prompt longer than one cycle's slack still runs.
        allowance = math.inf if not protected else (
            math.inf if self._credit_s >= self._slack_s and self._credit_s > 0 else self._credit_s)
        still: list[str] = []
        spent = 0
        for rid in self._prefilling:
            req = self.requests.get(rid)
            if req is None or (req.num_uncomputed_tokens <= 1 and req.status is not RequestStatus.WAITING):
                continue  # done (or gone): drop it from the list
            still.append(rid)
            if rid in in_batch or budget <= 0 or batch.num_seqs >= max_seqs:
                continue
            n = min(req.num_uncomputed_tokens, budget, self._tokens_within(allowance, spent))
            if n <= 0 or (n < req.num_uncomputed_tokens and n < _MIN_CHUNK):
                continue
            if self._admit(req, req.num_computed_tokens + n, in_batch):
                batch.add_prefill(req, n)
                in_batch.add(rid)
                budget -= n
                spent += n
        if protected and spent:
            self._credit_s -= self.latency.prefill_time(spent)
        self._prefilling = still
        return batch

    def _tokens_within(self, allowance_s: float, spent: int) -> int:
        """Most extra prefill tokens whose cost, added to `spent` tokens', stays within `allowance_s`."""
        if allowance_s == math.inf:
            return self.config.max_num_batched_tokens
        p = self.latency.prefill_time
        lo, hi = 0, self.config.max_num_batched_tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if p(spent + mid) <= allowance_s:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _admit(self, req: Request, tokens: int, in_batch: set[str]) -> bool:
        """Reserve KV for `tokens` (evicting paused, then best-effort requests, lowest density first) and
        make `req` runnable."""
        while not self.reserve(req, tokens):
            victim = self._victim(req, in_batch)
            if victim is None:
                return False
            self.preempt_recompute(victim)
            self._dirty = True
        if req.status is RequestStatus.WAITING:
            self.start(req)
        elif req.status is RequestStatus.PAUSED:
            self.resume(req)
        return True

    def _victim(self, req: Request, in_batch: set[str]) -> Request | None:
        protect = req.req_id in self._members
        best: tuple[int, float, float] | None = None
        victim = None
        for r in self.running:
            rid = r.req_id
            if rid in in_batch or rid == req.req_id or rid in self._members:
                continue
            if not protect and r.status is RequestStatus.RUNNING:
                continue  # best effort does not evict best effort that is scheduled in the mask
            density = r.utility / demand(r.slo.tpot_s, self.config.slice_period_s, self.config.slice_min_rate)
            key = (0 if r.status is RequestStatus.PAUSED else 1, density, -r.arrival_s)
            if best is None or key < best:
                best, victim = key, r
        return victim
