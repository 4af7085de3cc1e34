"""SLICE phase 2 at run time: what one iteration (one column of the decode mask) runs.

`ColumnFill` is a part of `SliceScheduler` (core/policies/slice.py) split off by concern: it reads the
selection state the scheduler keeps (`_members`, `_prefilling`, `_banking`, `_top_members`,
`_top_density`, `_bank_s`, `_cycle_s`, `_columns`) and calls its `_admit` / `_density`. An iteration is
filled in named phases, each only while the iteration still ends within the smallest TPOT slack of the
members it must protect (`_member_slack`): this per-iteration guard is what keeps members' mean TPOT when
prefill and best effort share the device; the cycle test alone only bounds the average over a full cycle.
1. `_decode_members`: the column's members decode (unless they sit out for a newcomer's prompt);
2. `_protect_absent`: members outside the column still need their next token after it;
3. `_prefill_pass(members=True)`: newly selected members' prompts;
4. `_best_effort_decodes`: the column's best-effort rows;
5. `_prefill_pass(members=False)`: best-effort prompts.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from operator import itemgetter

from sliceserve.core.latency_shapes import attention_pairs
from sliceserve.core.scheduler import Batch
from sliceserve.core.slice.selection import pieces_time
from sliceserve.request import Request, RequestStatus

_RUNNING = RequestStatus.RUNNING
# Smallest prompt chunk worth an iteration's fixed prefill cost (unless it finishes the prompt).
MIN_CHUNK = 16


@dataclass(slots=True)
class Iteration:
    """What one iteration has taken so far, and the limits the later phases must keep."""

    budget: int                                  # tokens left in max_num_batched_tokens
    batch: Batch = field(default_factory=Batch)
    in_batch: set[str] = field(default_factory=set)
    lines: list[tuple[float, float]] = field(default_factory=list)   # (density, slack) of members to protect
    others: list[Request] = field(default_factory=list)              # the column's best-effort rows
    k: int = 0                    # decodes in the batch
    ctx_tokens: int = 0           # tokens in context of the members decoding (phase 1)
    extra: float = math.inf       # time the iteration may take beyond the members' own decode step
    step_s: float = 0.0           # the members' decode step, context included
    spent: int = 0                # prefill tokens taken
    spent_pairs: float = 0.0      # their attention pairs, each chunk over its own prompt's cached part
    # Earliest TTFT deadline of the prompts this iteration completes, while still reachable: more work may
    # join only if those first tokens stay on time. (Three real-time prompts fused into one 2 s CPU
    # iteration made all three late where one after another each met its TTFT.)
    first_due: float = math.inf
    still: list[str] = field(default_factory=list)   # rows still prefilling after this iteration
    member_blocked: bool = False  # a member's prompt could not go in: best effort waits


class ColumnFill:
    """Mixed into `SliceScheduler` (methods use its state; `self` is not annotated with it because core.slice
    sits below core.policies: the import, even for typing, would be a circle import-linter refuses)."""

    def _fill(self, col: list[str], now: float, sit_out: bool = True) -> Batch:
        """One column: the phases of the module docstring, in order."""
        it = self._decode_members(col, now, sit_out)
        self._protect_absent(it, now)
        lat = self.latency
        limit = min(map(itemgetter(1), it.lines), default=math.inf)
        it.extra = limit - lat.decode_time(it.k) if limit < math.inf else math.inf
        ctx = it.ctx_tokens / it.k if it.k else 0.0
        it.step_s = lat.decode_time(it.k, ctx)
        self._prefill_pass(it, now, members=True)
        if it.member_blocked:
            # Members bank slack for the waiting newcomer instead of spending it: best effort waits, its
            # rows stay listed.
            it.still += [rid for rid in self._prefilling if rid not in self._members and rid in self.requests]
        else:
            self._best_effort_decodes(it, now)
            self._prefill_pass(it, now, members=False)
        self._prefilling = it.still
        return it.batch

    def _decode_members(self, col: list[str], now: float, sit_out: bool) -> Iteration:
        """Phase 1: members of the column decode; its best-effort rows are set aside for phase 4."""
        it = Iteration(budget=self.config.max_num_batched_tokens)
        mean_col = self._mean_column_s()
        waiting = max((self._density(r) for r in self._waiting_prompts()), default=-math.inf) if sit_out \
            else -math.inf
        # Lower-density members ahead of their own line sit this column out while a top-density member is
        # short of its slack reserve, so that member banks it back (`slice_bank_tokens`). Asked at most once,
        # and only when such a member is in the column (a loop over the members: keeps plan() cheap).
        may_yield = self._bank_s > 0 and sit_out
        top_short = functools.cache(lambda: self._top_short(now))
        # Locals: this loop runs for every member in every iteration (issue 21: decision cost).
        requests, members, top_members, per_req = self.requests, self._members, self._top_members, self._per_req
        density, member_slack, admit, reserve = self._density, self._member_slack, self._admit, self.reserve
        batch, in_batch, lines, others = it.batch, it.in_batch, it.lines, it.others
        budget, ctx_tokens = it.budget, 0
        for rid in col:
            req = requests.get(rid)
            # `num_uncomputed_tokens != 1`, inlined (two property calls per member per iteration).
            if req is None or budget <= 0 or \
                    len(req.prompt_token_ids) + len(req.output_token_ids) - req.num_computed_tokens != 1:
                continue
            if rid not in members:
                others.append(req)
            elif (waiting != -math.inf and self._sits_out(req, now, waiting, mean_col)) or (
                    may_yield and rid not in top_members and member_slack(req, now) > mean_col and top_short()):
                continue
            # A running member whose KV already suffices (the common case) needs no eviction or status change.
            elif (req.status is _RUNNING and reserve(req, req.num_computed_tokens + 1)) or \
                    admit(req, req.num_computed_tokens + 1, in_batch):
                batch.add_decode(req)
                in_batch.add(rid)
                budget -= 1
                ctx_tokens += req.num_computed_tokens
                e = per_req.get(rid)
                lines.append((e[2] if e is not None and e[0] is req else density(req), member_slack(req, now)))
        it.budget, it.ctx_tokens = budget, ctx_tokens
        it.k = len(it.batch.decode)
        return it

    def _protect_absent(self, it: Iteration, now: float) -> None:
        """Phase 2: members outside this column wait through it too (spread rows skip columns when C > their
        rate); they still need one more iteration of about the cycle's mean length after it."""
        if not ((it.k or self._prefilling) and len(it.in_batch) < len(self._members)):
            return
        mean_col = self._mean_column_s()
        for rid in self._members:
            req = self.requests.get(rid)
            if req is not None and rid not in it.in_batch and req.num_uncomputed_tokens == 1:
                it.lines.append((self._density(req), self._member_slack(req, now) - mean_col))

    def _best_effort_decodes(self, it: Iteration, now: float) -> None:
        """Phase 4: the column's best-effort rows decode while the iteration stays within what lower-density
        work may spend (members' slack less the top-density reserve) and the prompts' first tokens."""
        lat = self.latency
        it.extra = min(it.extra, self._spendable(it.lines, -math.inf) - lat.decode_time(it.k),
                       it.first_due - now - it.step_s)
        prompts_s = pieces_time(lat, it.spent, it.spent_pairs)
        for req in it.others:
            if it.budget <= 0 or it.batch.num_seqs >= self.config.max_num_seqs:
                break
            if lat.decode_time(it.k + 1) - lat.decode_time(it.k) + prompts_s > it.extra:
                break
            if self._admit(req, req.num_computed_tokens + 1, it.in_batch):
                it.batch.add_decode(req)
                it.in_batch.add(req.req_id)
                it.budget -= 1
                it.extra -= lat.decode_time(it.k + 1) - lat.decode_time(it.k)
                it.k += 1

    def _prefill_pass(self, it: Iteration, now: float, members: bool) -> None:
        """Phases 3 and 5: prompt chunks of the members' (or best effort's) rows still prefilling, rank order."""
        lat = self.latency
        for rid in self._prefilling:
            if (rid in self._members) is not members:
                continue
            req = self.requests.get(rid)
            if req is None or (req.num_uncomputed_tokens <= 1 and req.status is not RequestStatus.WAITING):
                continue  # done (or gone): drop it from the list
            it.still.append(rid)
            if rid in it.in_batch or it.budget <= 0 or it.batch.num_seqs >= self.config.max_num_seqs:
                continue
            allowance = it.extra
            if members:
                # A member's prefill answers only to the TPOT lines of members of at least its utility
                # density: a real-time newcomer's first token does not wait for lower-density members to
                # bank slack chunk by chunk (they rank below it, and selection charged its prefill before
                # theirs). Equal-density members still bind: a real-time stream decoding at exactly its
                # rate has no slack to lend, whatever the deadlines say.
                above = self._spendable(it.lines, self._density(req), self._keeps_reserve(req, it.budget, now))
                allowance = above - lat.decode_time(it.k) if above < math.inf else math.inf
            allowance = min(allowance, it.first_due - now - it.step_s)
            n = min(req.num_uncomputed_tokens, it.budget,
                    self._tokens_within(allowance, it.spent, it.spent_pairs, req.num_computed_tokens))
            # A member admitted to bank slack waits for its whole prompt to fit (selection counted on that);
            # chunks would each pay the prefill's fixed cost and wait for slack again.
            whole = rid in self._banking and it.budget >= req.num_uncomputed_tokens
            if n <= 0 or (n < req.num_uncomputed_tokens and (n < self._min_chunk() or whole)):
                it.member_blocked = it.member_blocked or members
                continue
            cached = req.num_computed_tokens
            if self._admit(req, cached + n, it.in_batch):
                it.batch.add_prefill(req, n)
                it.in_batch.add(rid)
                it.budget -= n
                it.spent += n
                it.spent_pairs += attention_pairs(n, cached)
                due = self._first_token_due(req, n)
                if now + it.step_s + pieces_time(lat, it.spent, it.spent_pairs) <= due:
                    it.first_due = min(it.first_due, due)

    def _keeps_reserve(self, req: Request, budget: int, now: float) -> bool:
        """Whether a member's prompt chunk must leave the top-density reserve alone. With
        `slice_lend_reserve`, not when the chunk completes the prompt (its first token comes with it) and its
        TTFT deadline is nearer than the reserve's size: waiting for the top members to bank it back would
        take at least that long, so the request would miss for a newcomer that may never come. The members
        still keep their own TPOT lines (the slack above the reserve is all it may spend).
        (Azure trace 0.6 req/s, seed 3: an nrt-100 prompt's last 14 tokens, 23 ms of work, waited 0.52 s
        behind a real-time stream that had just started and banked nothing; first token 1 ms after its
        1 s TTFT, where every peer but annealing met it.)"""
        if not self.config.slice_lend_reserve or req.slo.ttft_s is None or req.output_token_ids:
            return True
        if self.num_in_sight > self.config.max_num_seqs:
            return True   # under load the reserve stays whole
        if req.num_uncomputed_tokens > budget:
            return True
        return req.arrival_s + req.slo.ttft_s - now >= self._bank_s

    def _min_chunk(self) -> int:
        """MIN_CHUNK, or less where the token budget is that small: a budget below it (a config may set 8) would
        refuse every chunk of a prompt longer than the budget, forever, and best effort waits behind a
        blocked member (tests/slice/test_small_batch_budget.py). The budget less one decode per other slot
        is what a chunk can always get."""
        cfg = self.config
        return min(MIN_CHUNK, max(1, cfg.max_num_batched_tokens - (cfg.max_num_seqs - 1)))

    def _mean_column_s(self) -> float:
        return self._cycle_s / max(1, len(self._columns))

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
          waited 0.6 s on its last prompt token while a lower-density member's long prompt was chunked in).
        - `slice_sit_out` = line (measured, off by default): lower-density members sit out whenever they are on
          or ahead of their own line, not only a mean column ahead (docs/results/peers-issue21.md 0e)."""
        if waiting == -math.inf or not req.token_times_s or req.slo.tpot_s is None:
            return False
        if self._density(req) < waiting:
            ahead = 0.0 if self.config.slice_sit_out == "line" else mean_col
        else:
            ahead = 2 * req.slo.tpot_s
        return self._member_slack(req, now) > ahead

    def _spendable(self, lines: list[tuple[float, float]], own: float, reserve: bool = True) -> float:
        """Slack that work of utility density `own` may spend in this iteration: the smallest slack among the
        members of at least that density (`lines`: (density, slack)), less, when `own` is below the top
        density and `reserve`, the reserve top-density members keep for the next newcomer of their class."""
        keep = self._bank_s if own < self._top_density and reserve else 0.0
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

    def _tokens_within(self, allowance_s: float, spent: int, spent_pairs: float, cached: int) -> int:
        """Most extra prefill tokens of a prompt with `cached` tokens computed whose cost, added to the `spent`
        tokens' (whose attention scores `spent_pairs`), stays within `allowance_s`."""
        if allowance_s == math.inf:
            return self.config.max_num_batched_tokens
        if allowance_s <= 0:
            return 0
        lat = self.latency
        lo, hi = 0, self.config.max_num_batched_tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if pieces_time(lat, spent + mid, spent_pairs + attention_pairs(mid, cached)) <= allowance_s:
                lo = mid
            else:
                hi = mid - 1
        return lo
