"""SLICE phase 1: task selection by utility density plus an exact capacity test (SLICE.md "Phase 1").

Pure functions over plain numbers: the policy turns requests into `Candidate`s, this module decides
which are served for their SLO (`selected`), which ride along best effort (`best_effort`, lowest rate,
only in capacity the selected set leaves over), and which wait.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from sliceserve.core.latency import LatencyModel
from sliceserve.core.latency_shapes import attention_pairs, effective_prefix
from sliceserve.core.slice.mask import DecodeMask, column_times
from sliceserve.core.slice.wide import WideMask
from sliceserve.request import Request

# Decode steps per cycle a best-effort row starts at; the backfill then grows rates while the cycle fits.
_BACKFILL_RATE = 1

@dataclass(slots=True)
class Candidate:
    # CandidateBuilder.build passes the fields positionally (issue 21: decision cost): keep their order.
    req: Request
    rate: int              # v_i: decode steps per cycle it is given if selected (demand, feedback included)
    density: float         # utility per decode step per cycle: U_i / v_i (base demand)
    deadline: float        # tie-break: earliest first
    blocks: int            # worst-case KV blocks (prompt + max_tokens)
    now_blocks: int        # KV blocks for what it holds now plus its next step
    prefill_tokens: int    # tokens to compute before its next token can come (0 when it decodes)
    ctx: float             # expected mean context over the next cycle
    feasible: bool = True  # False: its SLO can no longer be met (TTFT passed, cannot catch up)
    # Banked TPOT slack of a decoding request: how much later than one TPOT from now its next token may
    # come and still lie on or before its TPOT line (first token + tpot * tokens so far); inf = unbounded.
    slack_s: float = math.inf
    work_s: float = 0.0    # predicted remaining service time (prefill + decode), for best-effort SRPT
    rank: float | None = None   # selection order if set (`slice_rank` = work), else `density`
    tier: float = 0.0      # `slice_rank` = work: order among never-started equals before `rank` (core/slice/fresh.py)
    started: bool = False  # `slice_rank` = work: it outranks newcomers of its utility (fresh.ranks_as_started)

    @property
    def sort_key(self) -> tuple:
        # Started streams before equal-density newcomers: on paper-4060ti, edge-mix at 3-4 req/s (seeds 1-3)
        # this raised real-time attainment 0.911-0.947 -> 0.929-0.953 at rate 3 and 0.867-0.886 ->
        # 0.895-0.901 at rate 4; on a CPU server a newcomer that ranked first by deadline stalled a started
        # real-time stream for 6 s.
        if self.rank is not None:
            # `slice_rank` = work: utility first, then started streams (as above), then utility per token left.
            return (-self.req.utility, not self.started, self.tier, -self.rank, self.deadline,
                    self.req.arrival_s, self.req.req_id)
        return (-self.density, self.req.num_output_tokens == 0, self.deadline, self.req.arrival_s, self.req.req_id)


@dataclass(slots=True)
class Population:
    """What the walk needs to know of every candidate before it starts (`select`). Given to `select`, its
    candidates may be a lazy iterable, which the walk leaves unfinished once every slot is taken."""
    count: int
    ctx_sum: float         # sum of their contexts: the mask's reference context is the mean
    top_density: float     # highest density among feasible ones (inf if none), for `_can_bank`

    @staticmethod
    def of(cands: list[Candidate]) -> "Population":
        return Population(len(cands), sum(c.ctx for c in cands),
                          max((c.density for c in cands if c.feasible), default=math.inf))


@dataclass(slots=True)
class SelectionParams:
    period_s: float
    margin: float
    layout: str
    misfit: str              # skip | stop
    max_num_seqs: int
    num_kv_blocks: int
    chunk_tokens: int        # max_num_batched_tokens
    backfill_order: str = "srpt"   # srpt (shortest remaining work first) | rank (utility density)
    max_backfill: int | None = None   # best-effort candidates examined per rebuild (None = all)
    wide_columns: bool = False     # `slice_wide_columns`: the layout or `nested`, whichever is cheaper (wide.py)


@dataclass(slots=True)
class Selection:
    mask: DecodeMask
    selected: list[Candidate] = field(default_factory=list)
    best_effort: list[Candidate] = field(default_factory=list)
    ttft_misses: list[Candidate] = field(default_factory=list)   # predicted to miss TTFT (violation risks)
    prefill_cost_s: float = 0.0
    member_prefill_s: float = 0.0   # the part of prefill_cost_s that selected members need
    # Members admitted before their prefill fits the members' slack (`_bank_wait_s`): their prompt waits,
    # whole, while the others bank slack in columns it does not yet decode in.
    banking: list[str] = field(default_factory=list)

    @property
    def cycle_time_s(self) -> float:
        return self.mask.cost() + self.prefill_cost_s


def demand(tpot_s: float | None, period_s: float, min_rate: int) -> int:
    """v_i = ceil(P / tpot_i); requests without a TPOT SLO demand `min_rate`."""
    if tpot_s is None:
        return min_rate
    # The 1e-9 keeps P / tpot exact when it is an integer in decimal but not in binary (1.0 / 0.05).
    return max(1, math.ceil(period_s / tpot_s - 1e-9))


def own_pairs(c: Candidate) -> float:
    """The attention pairs of the candidate's prompt left to run: its uncomputed tokens over what it has cached."""
    return attention_pairs(c.prefill_tokens, c.req.num_computed_tokens) if c.prefill_tokens else 0.0


def pieces_time(latency: LatencyModel, tokens: int, pairs: float) -> float:
    """p() of several prompts' pending prefill: `tokens` in all, whose attention scores `pairs` (each prompt over
    its own cached part and itself, none across prompts). p(pending + tokens) of one sequence would charge pairs
    between different prompts: on the CPU profile (1.2 us per pair) 1,500 pending tokens plus a 500-token
    newcomer read 2.5 s where they cost 1.6 s, and a half-done prompt's rest would be charged as if fresh."""
    return latency.prefill_time(tokens, effective_prefix(tokens, pairs))


def _ttft_ok(c: Candidate, now: float, pending_tokens: int, pending_pairs: float, mask: DecodeMask,
             latency: LatencyModel, params: SelectionParams, absorb_s: float) -> bool:
    """Whether its first token can still come in time if it joins behind `pending_tokens` of prefill.
    While selected members decode, prefill only runs in time they can give up (`absorb_s`: banked TPOT
    slack plus the cycle's spare time); beyond that the wait stretches by whole cycles of spare time."""
    req = c.req
    if req.slo.ttft_s is None or req.num_output_tokens > 0:
        return True
    tokens = pending_tokens + c.prefill_tokens
    chunks = max(1, -(-tokens // params.chunk_tokens))
    prefill = pieces_time(latency, tokens, pending_pairs + own_pairs(c))
    wait = prefill + chunks * latency.decode_time((mask.counts[0] if mask.counts else 0) + 1)
    if prefill > absorb_s:
        cap = params.period_s * (1.0 - params.margin)
        spare = cap - mask.cost()
        if spare <= 0:
            return False
        wait += (prefill - absorb_s) / spare * cap
    return now + wait <= req.ttft_deadline_s


def _bank_wait_s(deficit_s: float, mask: DecodeMask, cap: float) -> float:
    """Seconds until the members have banked `deficit_s` more TPOT slack while a newcomer's row waits for
    its prefill: the columns run without its decode step, so each cycle the members get their tokens in
    mask.cost() seconds against a TPOT line worth `cap`, and bank the difference. inf if they bank nothing."""
    spare = cap - mask.cost()
    return deficit_s / spare * cap if spare > 0 else math.inf


def _can_bank(c: Candidate, now: float, deficit_s: float, prefill_s: float, mask: DecodeMask,
              latency: LatencyModel, cap: float, top_density: float) -> bool:
    """Whether a newcomer whose prefill does not fit the members' slack yet may be admitted now, its prompt
    waiting (whole) until the members have banked the rest. A prompt cut into chunks instead would pay the
    prefill's fixed cost once per chunk and wait for slack again (a 4th real-time stream on paper-4060ti
    banks ~11 ms per 38 ms column). While it waits, every candidate ranked below it stays out (the pending
    prefill is charged to them too) and best effort stands aside, so it banks only:
    - if it is of the top utility density among feasible candidates: on a CPU-shaped device, where prompts
      take seconds, non-real-time newcomers banking this way paused the lower non-real-time classes for
      seconds at a time and their attainment fell to about 0 (edge-mix, 4.5x SLOs);
    - for at most one cycle, the horizon the selection plans over (same device: overall attainment 0.380
      without this limit, 0.394 with it, real-time unchanged);
    - if its first token still comes within its TTFT."""
    ttft = c.req.slo.ttft_s
    if ttft is None or c.prefill_tokens == 0 or c.req.num_output_tokens > 0 or c.density < top_density:
        return False
    wait = _bank_wait_s(deficit_s, mask, cap)
    # The prompt's last chunk yields its first token in the same iteration, beside the members' decodes.
    step = latency.decode_time(max(mask.counts, default=0))
    return wait <= cap and now + wait + prefill_s + step <= c.req.ttft_deadline_s


def _empty_mask(params: SelectionParams, latency: LatencyModel, population: Population,
                decode_time: Callable[[int], float] | None, cap: float) -> DecodeMask:
    if decode_time is None:
        # A column's per-iteration context term at the candidates' mean context (the per-request term is
        # charged row by row); at zero context a CPU step with long contexts was under-charged.
        ctx_ref = population.ctx_sum / population.count if population.count else 0.0
        decode_time = column_times(latency, ctx_ref, params.max_num_seqs)
    if params.wide_columns:
        return WideMask(params.layout, decode_time, latency.row_ctx_coef_s,  # type: ignore[return-value]
                        params.max_num_seqs, cap)
    return DecodeMask(params.layout, decode_time, latency.row_ctx_coef_s, params.max_num_seqs)


def select(candidates: Iterable[Candidate], params: SelectionParams, latency: LatencyModel, now: float,
           decode_time: Callable[[int], float] | None = None, population: Population | None = None) -> Selection:
    """Walk `candidates` in rank order (caller sorts by `sort_key`), admit what fits, then backfill.

    Prefill accounting: a newcomer's prefill is a one-time cost, not a per-cycle one. It is charged to the
    cycle's spare time (cap - T(S)) plus the smallest banked TPOT slack of the members already decoding
    (their SLO is on mean TPOT, so time they are ahead of their TPOT line can absorb it once). With no
    member decoding, prefill delays nobody's TPOT and only the TTFT check limits it. A newcomer short of
    that slack is still admitted, to `banking`, when the members can bank the rest before its TTFT
    (`_can_bank`): without it a 4th real-time stream on paper-4060ti (cycle full at 20 * l(4) = P) could
    start only when the three others happened to be ahead of their lines, which best effort prevents."""
    if population is None:
        candidates = list(candidates)
        population = Population.of(candidates)
    # The epsilon keeps a cycle that fills P exactly (e.g. 20 * 50 ms) from failing on float rounding.
    cap = params.period_s * (1.0 - params.margin) + 1e-9
    sel = Selection(mask := _empty_mask(params, latency, population, decode_time, cap))
    pending, pending_pairs, blocks, stopped = 0, 0.0, 0, False
    pending_s = latency.prefill_time(0)   # pieces_time(pending), kept: most candidates add no prefill
    min_slack = math.inf      # over selected members that decode (have a token already)
    rest: list[Candidate] = []
    top, max_seqs, kv_blocks = population.top_density, params.max_num_seqs, params.num_kv_blocks
    for c in candidates:
        if len(mask.rows) >= max_seqs:   # (not a local: a re-layout replaces the mask's dicts)
            break   # every slot is taken: no backfill follows, so the rest is never looked at
        if stopped or not c.feasible:
            rest.append(c)
            continue
        req = c.req
        if req.slo.ttft_s is not None and not req.output_token_ids:   # else `_ttft_ok` holds
            absorb = max(0.0, cap - mask.cost()) + min_slack
            if not _ttft_ok(c, now, pending, pending_pairs, mask, latency, params, absorb):
                sel.ttft_misses.append(c)
                rest.append(c)
                continue
        delta, pos = mask.added_cost(c.rate, c.ctx)
        cycle = mask.cost() + delta
        tokens = c.prefill_tokens
        if tokens:
            pairs = own_pairs(c)
            prefill, slack = pieces_time(latency, pending + tokens, pending_pairs + pairs), min_slack
        else:
            prefill, slack = pending_s, min(min_slack, c.slack_s)
        deficit = prefill - (cap - cycle + slack)
        bank = deficit > 0 and _can_bank(c, now, deficit, prefill, mask, latency, cap, top)
        if cycle > cap or (deficit > 0 and not bank) or blocks + c.blocks > kv_blocks:
            rest.append(c)
            stopped = params.misfit == "stop"
            continue
        if bank:
            sel.banking.append(req.req_id)
        mask.add(req.req_id, c.rate, c.ctx, pos)
        sel.prefill_cost_s = pending_s = prefill
        if tokens:
            pending += tokens
            pending_pairs += pairs
        blocks += c.blocks
        min_slack = slack
        sel.selected.append(c)
    sel.member_prefill_s = sel.prefill_cost_s
    if len(mask.rows) < params.max_num_seqs:   # else every slot is taken: no best effort, no need to sort
        _backfill(sel, _backfill_order(rest, params), params, latency, cap, pending, pending_pairs, blocks)
    return sel


def _backfill_order(rest: list[Candidate], params: SelectionParams) -> list[Candidate]:
    if params.backfill_order == "srpt":
        # SLICE.md leaves the best-effort order open: shortest remaining work first cuts mean completion
        # time (the classic SRPT result) without touching the selected set.
        rest.sort(key=lambda c: (c.work_s, c.req.arrival_s))
    return rest[:params.max_backfill] if params.max_backfill is not None else rest


def _backfill(sel: Selection, rest: list[Candidate], params: SelectionParams, latency: LatencyModel,
              cap: float, pending: int, pending_pairs: float, blocks: int) -> None:
    """Leftover cycle time goes to unselected requests at the lowest rate, then their rates grow (round
    robin, in backfill order) while the cycle still fits; rows never extend the cycle past the selected
    set's columns. Members' pending prefill is not charged here: at run time it goes before best effort
    (the policy's per-iteration guard), so best effort only ever gets what members leave."""
    mask = sel.mask
    max_cols = max(mask.num_columns, _BACKFILL_RATE)
    be_prefill = 0.0
    floor: float | None = None    # cost of the cheapest possible row (rate 1, no context, no prefill)
    for c in rest:
        if len(mask.rows) >= params.max_num_seqs:
            break
        if floor is None:
            floor = mask.added_cost(_BACKFILL_RATE)[0]
        if mask.cost() + floor + be_prefill > cap:
            break  # not even the cheapest row fits: the rest cannot either (keeps overload rebuilds cheap)
        # Best effort needs only what it holds plus its next step; it is evicted first when memory is short.
        if blocks + c.now_blocks > params.num_kv_blocks:
            continue
        delta, pos = mask.added_cost(_BACKFILL_RATE, c.ctx)
        pairs = own_pairs(c)
        prefill = (pieces_time(latency, pending + c.prefill_tokens, pending_pairs + pairs)
                   - pieces_time(latency, pending, pending_pairs))
        if mask.cost() + delta + be_prefill + prefill > cap:
            continue
        mask.add(c.req.req_id, _BACKFILL_RATE, c.ctx, pos)
        floor = None
        be_prefill += prefill
        pending += c.prefill_tokens
        pending_pairs += pairs
        blocks += c.now_blocks
        sel.best_effort.append(c)
    if not mask.rows:
        # Work conservation: nothing fits the cycle (e.g. one prompt alone is longer than P), so the
        # first request in backfill order that fits the KV runs anyway rather than leaving the device idle.
        for c in rest:
            if blocks + c.now_blocks <= params.num_kv_blocks:
                mask.add(c.req.req_id, _BACKFILL_RATE, c.ctx)
                be_prefill += pieces_time(latency, c.prefill_tokens, own_pairs(c))
                sel.best_effort.append(c)
                break
    sel.prefill_cost_s += be_prefill
    growing = list(sel.best_effort)
    while growing:
        still: list[Candidate] = []
        for c in growing:
            rid = c.req.req_id
            rate = mask.remove(rid)
            if rate < max_cols:
                delta, pos = mask.added_cost(rate + 1, c.ctx)
                if mask.cost() + delta + be_prefill <= cap:
                    mask.add(rid, rate + 1, c.ctx, pos)
                    still.append(c)
                    continue
            mask.add(rid, rate, c.ctx)
        growing = still
