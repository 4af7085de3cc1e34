"""SLICE phase 1 input: a request as the selection sees it (`Candidate`), built from its SLO, its progress
and the feedback's rate (why each part: the docstrings of core/policies/slice.py and of this package)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Callable

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.slice.feedback import SliceFeedback, rate_for
from sliceserve.core.slice.fresh import fresh_tier, ranks_as_started
from sliceserve.core.slice.selection import Candidate, demand
from sliceserve.request import Request, RequestStatus
from sliceserve.slo import FLOAT_SLACK_S


def ttft_lost(req: Request, now: float) -> bool:
    """Whether `req` can no longer meet its TTFT: no token yet and the bound has passed, or its first token
    already came after the bound."""
    ttft = req.slo.ttft_s
    if ttft is None:
        return False
    if req.token_times_s:
        return req.token_times_s[0] - req.arrival_s > ttft + FLOAT_SLACK_S
    return now > req.ttft_deadline_s


@dataclass(slots=True)
class CandidateBuilder:
    """Turns requests into candidates for one SLICE scheduler (its cycle and feedback; the config and the
    cycle's usable part are passed in, since the controller's knobs change them)."""

    latency: LatencyModel
    feedback: SliceFeedback
    period_s: float
    blocks_for: Callable[[int], int]    # the KV allocator's tokens -> blocks
    # Latency-model figures of the current rebuild (`begin`): the model moves between rebuilds (calibration),
    # never during one, and a rebuild under overload builds a thousand candidates (issue 21: decision cost).
    _step1_s: float = 0.0
    _per_token_s: float = 0.0
    _prefill_s: dict[tuple[int, int], float] = field(default_factory=dict)
    _demands: dict[float | None, int] = field(default_factory=dict)   # tpot -> base demand, this rebuild

    _figures: tuple = ()

    def begin(self, cfg: SchedulerConfig, cap_s: float) -> tuple:
        """Start a rebuild: read the latency model's figures the candidates share. Returns every input a
        candidate is built from besides its request and `now` (`figures`): two candidates of one request
        built under equal figures at times when its TTFT stands alike are equal."""
        lat = self.latency
        # The whole model's state rather than the few figures read here: p(n) is a function of it, whatever
        # terms the model grows.
        figures = (model_state(lat), cfg.max_num_seqs, cap_s, cfg.slice_min_rate, cfg.slice_rank,
                   cfg.slice_feedback, cfg.slice_fresh_order, cfg.slice_started_first)
        if figures != self._figures:
            self._figures = figures
            self._step1_s = lat.decode_time(1)
            self._per_token_s = lat.decode_time(cfg.max_num_seqs) / cfg.max_num_seqs   # batched decode cost
            self._prefill_s = {}
            self._demands = {}
        return figures

    @property
    def figures(self) -> tuple:
        """The figures of the last `begin`."""
        return self._figures

    def _prefill_time(self, tokens: int, cached: int) -> float:
        """p of a prompt's `tokens` left to run after the `cached` it has (its attention reads them)."""
        key = (tokens, cached)
        t = self._prefill_s.get(key)
        if t is None:
            t = self._prefill_s[key] = self.latency.prefill_time(tokens, cached)
        return t

    def build(self, req: Request, now: float, cfg: SchedulerConfig, cap_s: float, flag: bool = True) -> Candidate:
        """`flag` False: an infeasible SLO is not counted as a risk (`SliceFeedback.flag`) now but by the caller
        later (a candidate built on arrival, counted at the rebuild that first sees it)."""
        # Request fields read once each, no property calls, and the candidate built from positional
        # arguments (keywords cost twice as much): every rebuild builds one for each running request.
        base, rate, feasible = self._rate(req, now, cfg, cap_s, flag)
        slo = req.slo
        tpot, max_tokens = slo.tpot_s, req.sampling_params.max_tokens
        n_prompt, n_out = len(req.prompt_token_ids), len(req.output_token_ids)
        n_tokens, remaining = n_prompt + n_out, max_tokens - n_out
        uncomputed = n_tokens - req.num_computed_tokens
        needs_prefill = uncomputed > 1 or req.status is RequestStatus.WAITING
        prefill_tokens = uncomputed if needs_prefill else 0
        slack = math.inf
        if not needs_prefill and tpot is not None and n_out > 0:
            # Assume every later token comes one TPOT apart: what is left is time it can lend once.
            slack = req.token_times_s[0] + tpot * (max_tokens - 1) - now - tpot * remaining
        prefill_s = self._prefill_time(prefill_tokens, req.num_computed_tokens) if prefill_tokens else 0.0
        utility, blocks_for = req.utility, self.blocks_for
        deadline = selection_deadline(req, tpot, max_tokens)
        c = Candidate(   # in field order
            req, rate, utility / base, deadline,                                       # req rate density deadline
            blocks_for(n_prompt + max_tokens), blocks_for(n_tokens + 1), prefill_tokens,  # blocks now_blocks
            n_tokens + rate / 2, feasible, slack,                                      # ctx feasible slack_s
            prefill_s + self._per_token_s * remaining,                                 # work_s
            utility / max(1, remaining) if cfg.slice_rank == "work" else None)         # rank
        if n_out == 0 and cfg.slice_fresh_order != "off":
            c.tier = fresh_tier(req, cfg.slice_fresh_order, deadline)
        c.started = ranks_as_started(req, cfg.slice_started_first)
        return c

    def _rate(self, req: Request, now: float, cfg: SchedulerConfig, cap_s: float,
              flag: bool = True) -> tuple[int, int, bool]:
        """(base demand, rate it is given, whether its SLO can still be met)."""
        slo = req.slo
        base = self._demands.get(slo.tpot_s)
        if base is None:
            base = self._demands[slo.tpot_s] = demand(slo.tpot_s, self.period_s, cfg.slice_min_rate)
        feasible = True
        if slo.tpot_s is None and slo.e2e_s is not None:
            allowed = req.arrival_s + slo.e2e_s - now
            feasible = allowed > 0
            if feasible:
                base = max(base, rate_for(max(1, req.remaining_output_tokens), allowed, cap_s))
        rate: int | None = base
        if cfg.slice_feedback and feasible:
            rate = self.feedback.required_rate(req, now, base, cap_s)
        if rate is None:
            rate, feasible = base, False
        if ttft_lost(req, now):
            # Its SLO is lost whatever it gets now. A late first token left feasible would outrank (same
            # density, earlier deadline) a younger stream that is on time and take its slot: seen at edge-mix
            # rate 3, where a real-time request served best effort after its TTFT displaced an on-time one
            # mid-stream.
            feasible = False
        if rate * self._step1_s > cap_s:  # cannot go that fast even alone
            rate, feasible = max(1, math.floor(cap_s / self._step1_s)), False
        if flag and not feasible and not slo.is_empty:
            self.feedback.flag(req, "SLO can no longer be met")
        return base, rate, feasible


@functools.cache
def _fields_of(cls: type) -> attrgetter:
    return attrgetter(*(f.name for f in fields(cls)))


def model_state(lat: LatencyModel) -> tuple:
    """Every field of the latency model (lists as tuples): equal states predict equal times."""
    return tuple(tuple(v) if type(v) is list else v for v in _fields_of(type(lat))(lat))


def selection_deadline(req: Request, tpot: float | None, max_tokens: int) -> float:
    """Arrival + the tightest of its TTFT and e2e bounds (tpot x max_tokens with neither), else inf. A fixed
    deadline per request (not one that moves once the first token is out), so equal-density ties keep
    favouring the request that arrived first: a running one is not displaced by its twin."""
    ttft, e2e = req.slo.ttft_s, req.slo.e2e_s
    if ttft is not None:
        return req.arrival_s + (e2e if e2e is not None and e2e < ttft else ttft)   # min(), first on ties
    if e2e is not None:
        return req.arrival_s + e2e
    return req.arrival_s + tpot * max_tokens if tpot is not None else math.inf
