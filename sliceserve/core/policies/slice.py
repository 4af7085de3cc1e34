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

Parameters (SchedulerConfig `slice_*`), with the defaults and why: `sliceserve.core.slice`'s docstring.
Rebuilds are lazy: only after an arrival, finish, abort, eviction, drift or lag. They stay cheap under
overload: candidates of never-run waiting requests are built on arrival and kept ranked with their totals
(`sliceserve.core.slice.waiting`), the walk stops once every slot is taken, the backfill walk once not even
the cheapest row fits, and at most 8 x max_num_seqs best-effort candidates are examined.
"""
from __future__ import annotations

import math
from dataclasses import replace

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Knob, Policy
from sliceserve.core.scheduler import Batch
from sliceserve.core.slice.candidates import CandidateBuilder, selection_deadline
from sliceserve.core.slice.feedback import SliceFeedback
from sliceserve.core.slice.fill import ColumnFill
from sliceserve.core.slice.fresh import fresh_tier, ranks_as_started
from sliceserve.core.slice.lost import LostWork
from sliceserve.core.slice.selection import Selection, SelectionParams, demand, select
from sliceserve.core.slice.waiting import WaitingIndex
from sliceserve.request import Request, RequestStatus


# Best-effort candidates examined per rebuild, per batch slot: enough to fill every slot even when many
# are skipped for KV, while a rebuild under overload stays independent of the queue length.
_BACKFILL_SCAN = 8


def slice_period(config: SchedulerConfig, latency: LatencyModel) -> float:
    """The cycle P: as configured, else max(1 s, 2 x the device's 256-token prefill) (see the docstring)."""
    if config.slice_period_s is not None:
        return config.slice_period_s
    return max(1.0, 2.0 * latency.prefill_time(256))


@register("slice")
class SliceScheduler(ColumnFill, LostWork, Policy):
    orders_by_utility = True
    paces_decodes = True
    knobs = Policy.knobs + (
        Knob("margin", 0.0, 1.0, "share of the cycle P the selection leaves spare (`slice_margin`)", high_open=True),
        Knob("rate_boost", 0, math.inf, "extra decode steps per cycle granted one request", integer=True,
             per_request=True),
    )

    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        cfg = self.config
        self.period_s = slice_period(cfg, latency)
        self.cap_s = self.period_s * (1.0 - cfg.slice_margin)
        self.params = SelectionParams(self.period_s, cfg.slice_margin, cfg.slice_layout, cfg.slice_misfit,
                                      cfg.max_num_seqs, cfg.num_kv_blocks, cfg.max_num_batched_tokens,
                                      backfill_order=cfg.slice_backfill_order,
                                      max_backfill=_BACKFILL_SCAN * cfg.max_num_seqs,
                                      wide_columns=cfg.slice_wide_columns)
        self.feedback = SliceFeedback(self.period_s, cfg.slice_drift_tolerance, cfg.slice_lag_window,
                                      cfg.slice_catchup_factor)
        self.candidates = CandidateBuilder(latency, self.feedback, self.period_s, self.kv.blocks_for)
        self.selection: Selection | None = None
        self.num_rebuilds = 0
        self.num_rejected = 0
        self._dirty = True
        self._wrapped = False
        self._columns: list[list[str]] = []
        self._col = 0
        self._members: dict[str, int] = {}        # selected req_id -> base demand
        self._waiting = WaitingIndex(self.candidates, self.feedback)
        self._per_req: dict[str, tuple[Request, int, float]] = {}   # `_demand`
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
        self._waiting.enter(req, now, self.config, self.cap_s, arrival=True)

    def on_finish(self, req: Request, now: float) -> None:
        self._dirty = True
        self._waiting.forget(req)
        self._per_req.pop(req.req_id, None)
        self.feedback.forget(req.req_id)

    # --- knobs (read at the next rebuild, which setting one asks for) ----------------------------------
    def _read_knob(self, name: str, req_id: str | None) -> float:
        if name == "margin":
            return self.params.margin
        if name == "rate_boost":
            return self.feedback.boost.get(req_id or "", 0)
        return super()._read_knob(name, req_id)

    def _apply_knob(self, name: str, value: float, req_id: str | None) -> None:
        if name == "margin":
            self.params = replace(self.params, margin=value)
            self.cap_s = self.params.period_s * (1.0 - value)
        elif name == "rate_boost":
            self.feedback.boost[req_id or ""] = int(value)
            req = self.requests.get(req_id or "")
            if req is not None:
                self._waiting.reclassify(req, 0.0, self.config, self.cap_s)
        else:
            super()._apply_knob(name, value, req_id)
            self.params = replace(self.params, max_num_seqs=self.config.max_num_seqs)
        self._dirty = True
        self._waiting.figures_stale = True

    def observe_iteration(self, sched, result, now: float) -> None:  # type: ignore[override]
        super().observe_iteration(sched, result, now)
        self._waiting.figures_stale = True   # the latency model learnt from this iteration
        if self.config.slice_feedback and result.elapsed_s > 0 and self.feedback.observe(result.elapsed_s):
            self._dirty = True

    def admission_key(self, req: Request) -> tuple:
        """The selection's sort key (`Candidate.sort_key`) from what the request alone shows (no `now`, no
        feedback), for admission's TTFT estimate (server/admission.py)."""
        deadline = selection_deadline(req, req.slo.tpot_s, req.max_tokens)
        fresh = req.num_output_tokens == 0
        cfg = self.config
        if cfg.slice_rank == "work":
            tier = fresh_tier(req, cfg.slice_fresh_order, deadline) if fresh else 0.0
            return (-req.utility, not ranks_as_started(req, cfg.slice_started_first), tier,
                    -req.utility / max(1, req.remaining_output_tokens), deadline, req.arrival_s, req.req_id)
        density = req.utility / demand(req.slo.tpot_s, self.period_s, cfg.slice_min_rate)
        return (-density, fresh, deadline, req.arrival_s, req.req_id)

    # --- phase 1 -------------------------------------------------------------------------------------
    def _rebuild(self, now: float) -> None:
        self.num_rebuilds += 1
        waiting = self._waiting
        lost = waiting.lost(now)
        # `park` sets lost work aside only while there is other work for the device: then it is what
        # `reject` would refuse; with nothing else to run, parked work came back to be served.
        # `hopeless` parks what it does not refuse, on the same condition.
        drop = self.config.slice_drop_lost
        if drop == "hopeless" and self.parked:
            self._refuse_hopeless_parked(now)
        park = drop in ("park", "hopeless") and self.has_fresh_work
        if self.config.slice_reject_lost or park:
            self._reject_lost(now, lost, park=park and not self.config.slice_reject_lost)
        else:
            waiting.mark_lost(lost)
        waiting.prepare(now, self.config, self.cap_s)
        build, cfg, cap_s = self.candidates.build, self.config, self.cap_s
        fresh = [build(r, now, cfg, cap_s) for r in (*self.running, *waiting.others.values())]
        if drop in ("reject", "hopeless") or park:
            fresh = self._refuse_lost(fresh, now, park=park, only_hopeless=drop == "hopeless")
        if cfg.slice_drop_lost == "relegate" and self._relegates(fresh):
            self._adopt(select(self._relegated_walk(fresh), self.params, self.latency, now))
            return
        walk, population = waiting.pool.walk(fresh)
        if self.check_invariants:
            waiting.check(self.waiting, self.config, now)
        self._adopt(select(walk, self.params, self.latency, now, population=population))

    # --- the waiting queue's changes, for `WaitingIndex` -----------------------------------------------
    def start(self, req: Request) -> None:
        super().start(req)
        self._waiting.leave(req)

    def preempt_recompute(self, req: Request, front: bool = True) -> None:
        super().preempt_recompute(req, front)
        self._waiting.enter(req, 0.0, self.config, self.cap_s, arrival=False)

    def reject(self, req: Request, now: float, why: str) -> None:
        super().reject(req, now, why)
        self._waiting.forget(req)

    def park(self, req: Request, now: float) -> None:
        super().park(req, now)
        self._waiting.forget(req)

    @property
    def ends_parked_when_hopeless(self) -> bool:
        return self.config.slice_drop_lost == "hopeless"

    def _adopt(self, sel: Selection) -> None:
        """Make `sel` the running selection: flag the members it predicts to miss, pause and resume rows,
        and set the state the per-iteration fill reads (`ColumnFill`)."""
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
        self._set_bank(sel)
        # Keep the position instead of restarting at column 0: rebuilds come every few iterations under
        # load, and restarting would keep replaying the fullest (first, in `prefix`) columns, so members
        # would see those columns' iteration time rather than the cycle average the test budgeted.
        self._col = self._col % len(self._columns) if self._columns else 0
        self.feedback.start_cycle(len(self._columns))
        self.num_violation_risks = self.feedback.num_risks
        self._dirty = False

    def _set_bank(self, sel: Selection) -> None:
        """Rows still prefilling, the mask's columns and the top-density members' slack reserve."""
        self._prefilling = [c.req.req_id for c in sel.selected + sel.best_effort if c.prefill_tokens]
        self._banking = set(sel.banking)
        self._columns = sel.mask.columns()
        self._cycle_s = sel.mask.cost()
        self._top_density = max((c.density for c in sel.selected), default=math.inf)
        top = [c.req for c in sel.selected if c.density >= self._top_density]
        self._top_members = {r.req_id for r in top}
        self._bank_s = self.config.slice_bank_tokens * min((r.slo.tpot_s for r in top if r.slo.tpot_s is not None),
                                                           default=0.0)
        if self.config.slice_bank_tightest and self.num_in_sight <= self.config.max_num_seqs:
            # Light load (every request fits the sequence slots): the reserve is there for the next newcomer
            # of the tightest class the device serves (real-time, 50 ms), so it is capped at that class's
            # size. Sized on the top-density members' own TPOT it became 4 s (16 x 250 ms) whenever an
            # nrt-250 stream was the top member, and a lower-density prompt waited for it on an idle device
            # (edge-mix 0.5 req/s, seed 4: an nrt-100 first token 1.11 s after arrival, TTFT 1 s). Under
            # load the full reserve stays: capped there too, real-time fell to 0.980 at 2.75 req/s.
            self._bank_s = min(self._bank_s, self.config.slice_bank_tokens * self._tightest_tpot)

    def _check_lag(self) -> None:
        """At the end of each full cycle: selected requests behind their TPOT get a boost (-> rebuild)."""
        get, check_lag, per_req = self.requests.get, self.feedback.check_lag, self._per_req
        for rid in self._members:
            req = get(rid)
            if req is None:
                continue
            e = per_req.get(rid)
            if check_lag(req, e[1] if e is not None and e[0] is req else self._demand(req)[1]):
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

    def _demand(self, req: Request) -> tuple[Request, int, float]:
        """(req, base demand, utility density): fixed for a request's life (its SLO, its utility and P do not
        change), so computed once; plan() asks for every member in every iteration (issue 21: decision cost)."""
        e = self._per_req.get(req.req_id)
        if e is None or e[0] is not req:
            base = demand(req.slo.tpot_s, self.period_s, self.config.slice_min_rate)
            e = self._per_req[req.req_id] = (req, base, req.utility / base)
        return e

    def _density(self, req: Request) -> float:
        return self._demand(req)[2]

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
