"""SLICE: SLO-driven scheduling for LLM inference on edge devices (arXiv 2510.18544; SLICE.md).

Phase 1 (selection, `sliceserve.core.slice.selection`): every request gets a demand v_i = ceil(P / tpot_i)
decode steps per cycle of P seconds. Candidates (running, paused and waiting) are ranked by utility
density U_i / v_i (the paper's U_i * tpot_i up to the ceiling: value per unit of decode rate, which is
what a knapsack on cycle time should be greedy on); among equals, streams already started come first (a
started stream dropped misses its TPOT while the newcomer it makes room for would only trade places with
it), then earliest deadline, then arrival. The walk
admits a candidate if the exact cycle time of the decode mask stays <= P * (1 - margin), the prefill of
members not yet prefilled fits the spare time plus the decoding members' banked TPOT slack (or can be
banked before its TTFT: the member is then 'banking' and its prompt waits to go in whole), its
worst-case KV fits beside the other members', and its first token can still come within its TTFT. Unselected requests ride best effort in the time left over.
Phase 2 (`sliceserve.core.slice.mask`): the decode mask; each `plan()` runs its next column, plus prefill
chunks of rows still prefilling, within `max_num_batched_tokens`; after the last column it wraps.
Feedback (`sliceserve.core.slice.feedback`): lag boosts, catch-up rates, drift rebuilds, risk counting.

Parameters (SchedulerConfig), with the defaults and why:
- `slice_period_s` = None: the paper's cycle P of 1 s, or twice a 256-token prefill where that is longer
  (`slice_period`). Selection charges a newcomer's prefill to one cycle's spare time plus its members'
  banked slack, so a cycle shorter than a prompt's prefill refuses newcomers whenever members decode: on
  this CPU (p(256) ~ 1 s) two real-time arrivals close together left the second waiting past its TTFT
  (server overload run, docs/SERVER.md). Simulated on a CPU-shaped profile (edge-mix at 1 req/s, seeds
  1-3): real-time attainment 0.857-0.964 with P = 1 s, 0.964-1.000 with P = 1.9-2.25 s. On the paper's
  table 2 x p(256) is 168 ms, so P stays 1 s there.
- `slice_margin` = 0.0: the cycle test alone fills P exactly, so four real-time streams at 20 tokens/s
  fit the paper's table (20 * l(4) = 1000 ms = P) as the paper intends. Protection against prefill,
  best effort and model error comes from the per-iteration guard instead (next item), which only ever
  trims extras, never members' decodes; a margin > 0 still works (the controller raises it on drift).
- `slice_headroom` = 0.02: the guard lets an iteration run only while every decoding member's next token
  stays on or before its TPOT line, first token + n * tpot * (1 - headroom). A token on its line keeps the
  mean TPOT (the SLO, SLICE.md "How success is measured") within bound whatever follows; 2 % keeps float
  rounding and small model error from tipping a token that lands exactly on the line.
- Prefill accounting: a newcomer's prefill is one-time, not per cycle; selection charges it to the cycle's
  spare time plus the smallest banked TPOT slack of the decoding members (`selection.select`). At run
  time a newly selected member's prefill goes first, limited only by the TPOT lines of members of at
  least its utility density, members more than two TPOTs ahead of their line (lower-density members:
  one mean column ahead) sit a column out for it, and best effort waits until it is done. Prompts are
  fused into one iteration only while every prompt it completes still gets its first token within its
  TTFT (on a CPU, ~4 ms per prompt token, three fused real-time prompts made a 2 s iteration that all
  three missed).
- `slice_layout` = "spread": measured better than "prefix" (the paper's) for edge-mix's short real-time
  requests (16-64 tokens, shorter than two cycles): prefix puts every row in column 0, so a request that
  lives about one cycle sees the heavy columns more than the average. Both stay available.
- `slice_misfit` = "skip" (SLICE.md) | "stop" (the reference code: stop the walk at the first request
  that does not fit the cycle or the KV; requests whose TTFT already cannot be met are always skipped).
- `slice_min_rate` = 1: demand of requests without a TPOT SLO. An e2e-only request demands the rate that
  finishes it by its deadline, at least this.
- `slice_backfill_order` = "srpt": best effort (SLICE.md leaves its order open) goes shortest remaining
  work first, which cuts mean completion time; "rank" keeps utility-density order.
- `slice_bank_tokens` = 16: top-density members keep this many TPOTs of banked slack (0.8 s for a 50 ms
  real-time stream) from lower-density work: best effort and lower-density prefill may spend only the slack
  beyond it, and lower-density members ahead of their own line sit columns out while a top-density member is
  short of it. Without it the other classes fill every spare moment, real-time streams run exactly on their
  TPOT line, and a real-time newcomer finds no slack for its prompt (edge-mix rate 5, seed 1: a newcomer
  arriving 50 ms after another was refused for want of slack, then served 0.6 s late). On `paper-4060ti`,
  edge-mix seeds 1-3: real-time at rate 5 0.932/0.925/0.941 without (0) -> 0.953/0.952/0.960 with 16, overall
  attainment at rate 3 0.217/0.229/0.211 -> 0.278/0.251/0.281; 8 and 24 tokens are close, 32 loses real-time
  at rate 5. A one-time cost per stream: once banked, lower-density work gets the spare time again.
- `slice_rank` = "work" (issue 21; "rate" is the paper's U_i / v_i): candidates are ranked by utility,
  then streams already started (as above), then utility per output token left. U / v favours slow-TPOT
  long requests (edge-mix's nrt-250: 1/4 against nrt-100's 1/10), which hold one of the `max_num_seqs`
  slots ~48 s each; per token left, the request that frees its slot soonest goes first. edge-mix on
  `paper-4060ti`, seeds 2-4 (both with `slice_reject_lost`): met requests per second 0.672 vs 0.644 at
  1 req/s, 0.917 vs 0.839 at 2, 1.067 vs 0.944 at 3; nrt-100 0.506 vs 0.348 at 1; real-time 1.000 at
  0.5-3 either way. Without "started first" (utility per token left alone) real-time fell to 0.988 at 2.
- `slice_reject_lost` = True (issue 21): a request whose TTFT passed with no token out is refused
  (`Scheduler.reject`; the server answers 429 slo_infeasible) instead of served best effort. The server
  sets it from `overload` (on with reject). Seeds 2-4: met/s 0.644 vs 0.622 at 1 req/s, 0.839 vs 0.794 at
  2, 0.944 vs 0.900 at 3, real-time unchanged. Cost: one pass over the queues per rebuild.
- `slice_bank_tightest` = True (issue 21): while every request fits the sequence slots (light load) the
  reserve of `slice_bank_tokens` is capped at that many TPOTs of the tightest class seen. Sized on the
  top-density member's own TPOT it was 4 s whenever an nrt-250 stream was on top, and an nrt-100 prompt
  waited for it on an idle device (edge-mix 0.5 req/s seed 4: first token after 1.11 s, TTFT 1 s). Seeds
  2-4: met/s 0.417 vs 0.406 at 0.5, 0.678 vs 0.633 at 0.75, 0.739 vs 0.672 at 1; capped under load too,
  real-time fell to 0.980 at 2.75 req/s, so under load the full reserve stays.
- `slice_feedback` = True, with `slice_drift_tolerance` = 0.1, `slice_lag_window` = 8 tokens and
  `slice_catchup_factor` = 2 (see `sliceserve.core.slice.feedback` for why each).
- Utilities: `Request.utility` (real-time class 100, others 1: `sliceserve.slo.BUILTIN_CLASSES`).
Rebuilds are lazy: only after an arrival, finish, abort, eviction, drift or lag. They stay cheap under
overload: candidates of never-run waiting requests are cached, the backfill walk stops once not even the
cheapest row fits, and at most 8 x max_num_seqs best-effort candidates are examined.
"""
from __future__ import annotations

import functools
import math

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import register
from sliceserve.core.scheduler import Batch, Scheduler
from sliceserve.core.slice.feedback import SliceFeedback, rate_for
from sliceserve.core.slice.selection import Candidate, Selection, SelectionParams, demand, select
from sliceserve.request import FinishReason, Request, RequestStatus
from sliceserve.slo import FLOAT_SLACK_S


# Smallest prompt chunk worth an iteration's fixed prefill cost (unless it finishes the prompt).
_MIN_CHUNK = 16
# Best-effort candidates examined per rebuild, per batch slot: enough to fill every slot even when many
# are skipped for KV, while a rebuild under overload stays independent of the queue length.
_BACKFILL_SCAN = 8


def slice_period(config: SchedulerConfig, latency: LatencyModel) -> float:
    """The cycle P: as configured, else max(1 s, 2 x the device's 256-token prefill) (see the docstring)."""
    if config.slice_period_s is not None:
        return config.slice_period_s
    return max(1.0, 2.0 * latency.prefill_time(256))


def _ttft_lost(req: Request, now: float) -> bool:
    """Whether `req` can no longer meet its TTFT: no token yet and the bound has passed, or its first token
    already came after the bound."""
    ttft = req.slo.ttft_s
    if ttft is None:
        return False
    if req.token_times_s:
        return req.token_times_s[0] - req.arrival_s > ttft + FLOAT_SLACK_S
    return now > req.arrival_s + ttft


@register("slice")
class SliceScheduler(Scheduler):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        cfg = self.config
        self.period_s = slice_period(cfg, latency)
        self.cap_s = self.period_s * (1.0 - cfg.slice_margin)
        self.params = SelectionParams(self.period_s, cfg.slice_margin, cfg.slice_layout, cfg.slice_misfit,
                                      cfg.max_num_seqs, cfg.num_kv_blocks, cfg.max_num_batched_tokens,
                                      backfill_order=cfg.slice_backfill_order,
                                      max_backfill=_BACKFILL_SCAN * cfg.max_num_seqs)
        self.feedback = SliceFeedback(self.period_s, cfg.slice_drift_tolerance, cfg.slice_lag_window,
                                      cfg.slice_catchup_factor)
        self.selection: Selection | None = None
        self.num_rebuilds = 0
        self.num_rejected = 0
        self._dirty = True
        self._wrapped = False
        self._columns: list[list[str]] = []
        self._col = 0
        self._members: dict[str, int] = {}        # selected req_id -> base demand
        self._cached: dict[str, Candidate] = {}   # never-run waiting request -> its candidate
        self._cycle_s = 0.0                       # predicted cost of one pass over the mask
        self._prefilling: list[str] = []          # rows with prompt/recompute left, rank order
        self._banking: set[str] = set()           # members whose prompt waits, whole, for banked slack
        self._top_density = math.inf              # highest utility density among members
        self._bank_s = 0.0                        # slack top-density members keep from lower-density work
        self._top_members: set[str] = set()       # members of that density
        self._tightest_tpot = math.inf            # tightest TPOT of any request seen (`slice_bank_tightest`)

    # --- rebuild triggers ----------------------------------------------------------------------------
    def on_arrival(self, req: Request, now: float) -> None:
        self._dirty = True
        if req.slo.tpot_s is not None:
            self._tightest_tpot = min(self._tightest_tpot, req.slo.tpot_s)

    def on_finish(self, req: Request, now: float) -> None:
        self._dirty = True
        self._cached.pop(req.req_id, None)
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

    def admission_key(self, req: Request) -> tuple:
        """The order this policy serves its queue in, for admission's TTFT estimate (server/admission.py): the
        selection's sort key (`Candidate.sort_key`) from what the request alone shows (no `now`, no feedback)."""
        slo = req.slo
        bounds = [b for b in (slo.ttft_s, slo.e2e_s) if b is not None] or (
            [slo.tpot_s * req.max_tokens] if slo.tpot_s is not None else [])
        deadline = req.arrival_s + min(bounds) if bounds else math.inf
        fresh = req.num_output_tokens == 0
        if self.config.slice_rank == "work":
            return (-req.utility, fresh, -req.utility / max(1, req.remaining_output_tokens), deadline,
                    req.arrival_s, req.req_id)
        density = req.utility / demand(slo.tpot_s, self.period_s, self.config.slice_min_rate)
        return (-density, fresh, deadline, req.arrival_s, req.req_id)

    # --- phase 1 -------------------------------------------------------------------------------------
    def _candidate(self, req: Request, now: float) -> Candidate:
        cfg, slo = self.config, req.slo
        base = demand(slo.tpot_s, self.period_s, cfg.slice_min_rate)
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
        if _ttft_lost(req, now):
            # Its SLO is lost whatever it gets now. A late first token left feasible would outrank (same
            # density, earlier deadline) a younger stream that is on time and take its slot: seen at edge-mix
            # rate 3, where a real-time request served best effort after its TTFT displaced an on-time one
            # mid-stream.
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
        lat = self.latency
        slack = math.inf
        if not needs_prefill and slo.tpot_s is not None and req.num_output_tokens > 0:
            # Assume every later token comes one TPOT apart: what is left is time it can lend once.
            slack = req.token_times_s[0] + slo.tpot_s * (req.max_tokens - 1) - now \
                - slo.tpot_s * req.remaining_output_tokens
        per_token = lat.decode_time(cfg.max_num_seqs) / cfg.max_num_seqs   # batched decode cost
        return Candidate(
            req=req, rate=rate, density=req.utility / base,
            deadline=req.arrival_s + min(bounds) if bounds else math.inf,
            blocks=self.kv.blocks_for(req.max_total_tokens),
            now_blocks=self.kv.blocks_for(req.num_tokens + 1),
            prefill_tokens=uncomputed if needs_prefill else 0,
            ctx=req.num_tokens + rate / 2, feasible=feasible, slack_s=slack,
            rank=req.utility / max(1, req.remaining_output_tokens) if cfg.slice_rank == "work" else None,
            work_s=lat.prefill_time(uncomputed if needs_prefill else 0) + per_token * req.remaining_output_tokens)

    def _waiting_candidate(self, req: Request, now: float) -> Candidate:
        """Candidates of requests that never ran depend on `now` only through TTFT feasibility, so they
        are built once and reused: under overload thousands wait and rebuilds come on every arrival."""
        c = self._cached.get(req.req_id)
        if req.slo.e2e_s is not None:
            return self._candidate(req, now)   # an e2e deadline's rate grows as time passes
        if c is None or c.req is not req:
            c = self._candidate(req, now)
            self._cached[req.req_id] = c
        elif c.feasible and req.slo.ttft_s is not None and now > req.arrival_s + req.slo.ttft_s:
            c.feasible = False
            self.feedback.flag(req, "SLO can no longer be met")
        return c

    def _reject_lost(self, now: float) -> None:
        """Refuse every request whose TTFT has passed with no token out (`slice_reject_lost`): its SLO is
        lost whatever it gets now, and as best effort it would take time from requests that can still
        make theirs; the client hears at once (finish reason REJECTED) instead of after a queue timeout."""
        for req in [r for r in self.waiting + self.running if not r.output_token_ids and _ttft_lost(r, now)]:
            self.reject(req, now, f"TTFT: no first token within {req.slo.ttft_s:g} s; retry later")
            self._cached.pop(req.req_id, None)
            self._members.pop(req.req_id, None)
            self.num_rejected += 1

    def _rebuild(self, now: float) -> None:
        self.num_rebuilds += 1
        if self.config.slice_reject_lost:
            self._reject_lost(now)
        cands = [self._candidate(r, now) for r in self.running]
        cands += [self._waiting_candidate(r, now) if r.num_computed_tokens == 0 and not r.output_token_ids
                  and not (self.config.slice_feedback and r.req_id in self.feedback.boost)
                  else self._candidate(r, now) for r in self.waiting]
        cands.sort(key=lambda c: c.sort_key)
        sel = select(cands, self.params, self.latency, now)
        for c in sel.ttft_misses:
            self.feedback.flag(c.req, "TTFT unreachable")
        members = {c.req.req_id: c.rate for c in sel.selected}
        # Iterate in insertion order: a set difference's order varies with PYTHONHASHSEED and would make
        # the flag order (and so runs) differ between processes.
        for rid in [r for r in self._members if r not in members]:
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
        self._banking = set(sel.banking)
        self._columns = sel.mask.columns()
        self._cycle_s = sel.mask.cost()
        self._top_density = max((c.density for c in sel.selected), default=math.inf)
        top = [c.req for c in sel.selected if c.density >= self._top_density]
        self._top_members = {r.req_id for r in top}
        self._bank_s = self.config.slice_bank_tokens * min((r.slo.tpot_s for r in top if r.slo.tpot_s is not None),
                                                           default=0.0)
        if self.config.slice_bank_tightest and len(self.requests) <= self.config.max_num_seqs:
            # Light load (every request fits the sequence slots): the reserve is there for the next newcomer
            # of the tightest class the device serves (real-time, 50 ms), so it is capped at that class's
            # size. Sized on the top-density members' own TPOT it became 4 s (16 x 250 ms) whenever an
            # nrt-250 stream was the top member, and a lower-density prompt waited for it on an idle device
            # (edge-mix 0.5 req/s, seed 4: an nrt-100 first token 1.11 s after arrival, TTFT 1 s). Under
            # load the full reserve stays: capped there too, real-time fell to 0.980 at 2.75 req/s.
            self._bank_s = min(self._bank_s, self.config.slice_bank_tokens * self._tightest_tpot)
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
                    req, demand(req.slo.tpot_s, self.period_s, self.config.slice_min_rate)):
                self._dirty = True
        self.num_violation_risks = self.feedback.num_risks

    # --- phase 2 -------------------------------------------------------------------------------------
    def plan(self, now: float) -> Batch:
        if self._wrapped and self.config.slice_feedback:
            self._check_lag()
        self._wrapped = False
        if self._dirty:
            self._rebuild(now)
        for sit_out in (True, False):
            for _ in range(len(self._columns)):
                batch = self._fill(self._next_column(), now, sit_out)
                if batch.num_seqs:
                    return batch
            # Every column came out empty because members far ahead of their TPOT line sat out for a
            # newcomer whose prompt cannot run yet (it waits, whole, for slack): idling would only let
            # time pass (the simulator jumps to the next arrival), so members decode after all.
        return Batch()

    def _next_column(self) -> list[str]:
        col = self._columns[self._col]
        self._col += 1
        if self._col == len(self._columns):
            self._col, self._wrapped = 0, True
        return col

    def _fill(self, col: list[str], now: float, sit_out: bool = True) -> Batch:
        """One column: members' decodes always; then, in this order, newly selected members' prefill,
        best-effort decodes of the column and best-effort prefill, each only while the iteration still
        ends within the smallest TPOT slack of the members decoding in it (`_member_slack`). This per-
        iteration guard is what keeps members' mean TPOT when prefill and best effort share the device;
        the cycle test alone only bounds the average over a full cycle."""
        batch, in_batch = Batch(), set()
        budget, max_seqs = self.config.max_num_batched_tokens, self.config.max_num_seqs
        lat = self.latency
        others: list[Request] = []
        lines: list[tuple[float, float]] = []                      # (density, slack) of members to protect
        mean_col = self._cycle_s / max(1, len(self._columns))
        waiting = max((self._density(r) for r in self._waiting_prompts()), default=-math.inf) if sit_out \
            else -math.inf
        # Lower-density members ahead of their own line sit this column out while a top-density member is
        # short of its slack reserve, so that member banks it back (`slice_bank_tokens`). Asked at most once,
        # and only when such a member is in the column (a loop over the members: keeps plan() cheap).
        may_yield = self._bank_s > 0 and sit_out
        top_short = functools.cache(lambda: self._top_short(now))
        for rid in col:
            req = self.requests.get(rid)
            if req is None or req.num_uncomputed_tokens != 1 or budget <= 0:
                continue
            if rid not in self._members:
                others.append(req)
            elif self._sits_out(req, now, waiting, mean_col) or (
                    may_yield and rid not in self._top_members and self._member_slack(req, now) > mean_col
                    and top_short()):
                continue
            elif self._admit(req, req.num_computed_tokens + 1, in_batch):
                batch.add_decode(req)
                in_batch.add(rid)
                budget -= 1
                lines.append((self._density(req), self._member_slack(req, now)))
        k = len(batch.decode)
        if (k or self._prefilling) and len(in_batch) < len(self._members):
            # Members outside this column wait through it too (spread rows skip columns when C > their
            # rate); they still need one more iteration of about the cycle's mean length after it.
            for rid in self._members:
                req = self.requests.get(rid)
                if req is not None and rid not in in_batch and req.num_uncomputed_tokens == 1:
                    lines.append((self._density(req), self._member_slack(req, now) - mean_col))
        limit = min((slack for _, slack in lines), default=math.inf)
        # Time the iteration may take beyond the members' own decode step.
        extra = limit - lat.decode_time(k) if limit < math.inf else math.inf
        spent = 0
        still: list[str] = []
        member_blocked = False
        # Earliest TTFT deadline of the prompts this iteration completes, while still reachable: more work
        # may join only if those first tokens stay on time. (Three real-time prompts fused into one 2 s
        # CPU iteration made all three late where one after another each met its TTFT.)
        first_due = math.inf
        ctx = sum(self.requests[r].num_computed_tokens for r in batch.decode) / k if k else 0.0
        step_s = lat.decode_time(k, ctx)   # the members' decode step, context included
        for pass_members in (True, False):
            if not pass_members:
                if member_blocked:
                    break  # let members bank slack for the waiting newcomer instead of spending it
                extra = min(extra, self._spendable(lines, -math.inf) - lat.decode_time(k), first_due - now - step_s)
                for req in others:
                    if budget <= 0 or batch.num_seqs >= max_seqs:
                        break
                    if lat.decode_time(k + 1) - lat.decode_time(k) + lat.prefill_time(spent) > extra:
                        break
                    if self._admit(req, req.num_computed_tokens + 1, in_batch):
                        batch.add_decode(req)
                        in_batch.add(req.req_id)
                        budget -= 1
                        extra -= lat.decode_time(k + 1) - lat.decode_time(k)
                        k += 1
            for rid in self._prefilling:
                if (rid in self._members) is not pass_members:
                    continue
                req = self.requests.get(rid)
                if req is None or (req.num_uncomputed_tokens <= 1 and req.status is not RequestStatus.WAITING):
                    continue  # done (or gone): drop it from the list
                still.append(rid)
                if rid in in_batch or budget <= 0 or batch.num_seqs >= max_seqs:
                    continue
                allowance = extra
                if pass_members:
                    # A member's prefill answers only to the TPOT lines of members of at least its utility
                    # density: a real-time newcomer's first token does not wait for lower-density members
                    # to bank slack chunk by chunk (they rank below it, and selection charged its prefill
                    # before theirs). Equal-density members still bind: a real-time stream decoding at
                    # exactly its rate has no slack to lend, whatever the deadlines say.
                    above = self._spendable(lines, self._density(req))
                    allowance = above - lat.decode_time(k) if above < math.inf else math.inf
                allowance = min(allowance, first_due - now - step_s)
                n = min(req.num_uncomputed_tokens, budget, self._tokens_within(allowance, spent))
                # A member admitted to bank slack waits for its whole prompt to fit (selection counted on
                # that); chunks would each pay the prefill's fixed cost and wait for slack again.
                whole = rid in self._banking and budget >= req.num_uncomputed_tokens
                if n <= 0 or (n < req.num_uncomputed_tokens and (n < _MIN_CHUNK or whole)):
                    member_blocked = member_blocked or pass_members
                    continue
                if self._admit(req, req.num_computed_tokens + n, in_batch):
                    batch.add_prefill(req, n)
                    in_batch.add(rid)
                    budget -= n
                    spent += n
                    due = self._first_token_due(req, n)
                    if now + step_s + lat.prefill_time(spent) <= due:
                        first_due = min(first_due, due)
        if member_blocked:  # the best-effort pass was skipped: keep its rows listed
            still += [rid for rid in self._prefilling if rid not in self._members and rid in self.requests]
        self._prefilling = still
        return batch

    def _sits_out(self, req: Request, now: float, waiting: float, mean_col: float) -> bool:
        """Whether member `req` skips this column so that its time goes to the prompt of a newcomer member
        (`waiting`: the highest utility density among members whose prompt is not in; -inf when none).
        - Members of at least that density sit out only when more than two TPOTs ahead of their line.
        - Lower-density members sit out as soon as they are one mean column ahead of their own line: their
          decode steps would take the time the newcomer waits for, which the selection (ranking it above
          them) gave it. (edge-mix rate 3: a real-time newcomer's prompt went in 50-token chunks between
          non-real-time decodes that kept every column near the real-time TPOT; first token after 0.5 s.)
        - A row whose prompt is done but that has no token yet has no line (slack inf) and never sits out:
          its next step is the first token the rule is meant to hurry (edge-mix rate 3: a real-time row
          waited 0.6 s on its last prompt token while a lower-density member's long prompt was chunked in)."""
        if waiting == -math.inf or not req.token_times_s or req.slo.tpot_s is None:
            return False
        ahead = mean_col if self._density(req) < waiting else 2 * req.slo.tpot_s
        return self._member_slack(req, now) > ahead

    def _spendable(self, lines: list[tuple[float, float]], own: float) -> float:
        """Slack that work of utility density `own` may spend in this iteration: the smallest slack among the
        members of at least that density (`lines`: (density, slack)), less, when `own` is below the top
        density, the reserve top-density members keep for the next newcomer of their class."""
        keep = self._bank_s if own < self._top_density else 0.0
        return min((sl - (keep if d >= self._top_density else 0.0) for d, sl in lines if d >= own), default=math.inf)

    def _top_short(self, now: float) -> bool:
        """Whether a decoding top-density member holds less banked slack than the reserve."""
        for rid in self._top_members:
            req = self.requests.get(rid)
            if req is not None and req.token_times_s and self._member_slack(req, now) < self._bank_s:
                return True
        return False

    def _waiting_prompts(self) -> list[Request]:
        """Members whose prompt (or recompute) is not in yet."""
        reqs = (self.requests.get(rid) for rid in self._prefilling if rid in self._members)
        return [r for r in reqs if r is not None and (r.num_uncomputed_tokens > 1 or r.status is RequestStatus.WAITING)]

    def _density(self, req: Request) -> float:
        cfg = self.config
        return req.utility / demand(req.slo.tpot_s, self.period_s, cfg.slice_min_rate)

    def _first_token_due(self, req: Request, n: int) -> float:
        """TTFT deadline of `req` if a chunk of `n` tokens completes its prompt (its first token comes at
        the end of this iteration), else inf."""
        if req.slo.ttft_s is None or req.output_token_ids or n < req.num_uncomputed_tokens:
            return math.inf
        return req.arrival_s + req.slo.ttft_s * (1.0 - self.config.slice_headroom)

    def _member_slack(self, req: Request, now: float) -> float:
        """Seconds until `req`'s TPOT line: its next token should come no later than first token +
        n * tpot * (1 - headroom), n = tokens since the first. A token on or before its line keeps the
        mean TPOT within the SLO whatever comes later; the headroom absorbs latency-model error."""
        tpot = req.slo.tpot_s
        if tpot is None or not req.token_times_s:
            return math.inf
        line = tpot * (1.0 - self.config.slice_headroom)
        return req.token_times_s[0] + line * len(req.token_times_s) - now

    def _tokens_within(self, allowance_s: float, spent: int) -> int:
        """Most extra prefill tokens whose cost, added to `spent` tokens', stays within `allowance_s`."""
        if allowance_s == math.inf:
            return self.config.max_num_batched_tokens
        if allowance_s <= 0:
            return 0
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
            key = (0 if r.status is RequestStatus.PAUSED else 1, self._density(r), -r.arrival_s)
            if best is None or key < best:
                best, victim = key, r
        return victim
