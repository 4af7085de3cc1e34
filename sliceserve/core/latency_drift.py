"""Drift detection for the latency model: when a term's residual stays biased, re-measure that term.

Online calibration (`LatencyModel.observe`) moves each term's factor by at most `calibration_cap` per
iteration, within FACTOR_BOUNDS, and prefill only learns from the iterations that carry a prompt, weighted by
prefill's share of them: under sustained load a biased prefill estimate (the start-up quick estimate measured
while the machine was busy: 1.8x a fresh idle profile in the first live run) corrects slowly or not at all.
The detector watches the audit's residuals per term (decode: decode-only iterations; prefill: iterations that
carry a prompt), and when the median log(predicted / measured) of the last `samples` iterations of a term stays
beyond `threshold` for `window_s`, it asks for a re-profile of that term, which the engine runs in its next
idle gap (no running or waiting request for `min_idle_s`): a few shapes measured on the executor replace the
term's scale (`rebase_term`) and reset its online factor. One term's bias never re-profiles the other.

The idle re-check (`settled`): a term whose online factor has moved more than `recheck_factor` from its last
measured level is also re-measured once the engine has been idle `recheck_idle_s`. The factor follows what
iterations cost under load, which is not what they cost on an idle engine: on the 2-vCPU CPU the server's own
HTTP streaming and the clients share the machine with the engine thread, and in live run 6
(docs/results/live-fidelity.md) pure prefills under 1-2x edge-mix took 1.06-1.22x an idle profile's time
while the online factor, unbiased on those loaded iterations, ended 1.46x the start-up estimate. The next
arrival at an idle server runs on an idle engine, so in the gap the model goes back to what the device does
idle, and the online factor follows the load again from there (a few dozen iterations, each step capped).

Time is passed in (`now`): no clock reads here.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sliceserve.core.latency import IterationSample, LatencyModel

TERMS = ("decode", "prefill")


def term_of(kind: str) -> str:
    """The latency-model term an audited iteration kind speaks for (a prompt chunk beside decodes is
    attributed to prefill, as calibration attributes it)."""
    return "decode" if kind == "decode" else "prefill"


@dataclass(slots=True)
class DriftConfig:
    threshold: float = 0.15     # |median log(pred / meas)| beyond this is a bias (~16%), not noise
    samples: int = 16           # iterations of a term the median is taken over
    window_s: float = 20.0      # how long the bias must last before a re-profile is asked for
    min_idle_s: float = 1.0     # how long the engine must have been idle before re-profiling in the gap
    cooldown_s: float = 60.0    # at least this long between two re-profiles of one term
    recheck_factor: float | None = 0.15   # an online factor beyond 1 +- this is re-measured when idle; None: never
    recheck_idle_s: float = 5.0  # how long the engine must have been idle before that re-check

    def __post_init__(self) -> None:
        if (self.threshold <= 0 or self.samples <= 0 or self.window_s < 0 or self.min_idle_s < 0 or self.cooldown_s < 0
                or self.recheck_idle_s < 0 or (self.recheck_factor is not None and self.recheck_factor <= 0)):
            raise ValueError(f"drift settings must be positive (threshold, samples, recheck_factor) and "
                             f"non-negative, got {self}")


@dataclass(slots=True)
class _TermState:
    residuals: deque = field(default_factory=deque)     # log(pred / meas) of the last iterations
    biased_since: float | None = None
    last_reprofile_s: float = -math.inf


class DriftDetector:
    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self.terms = {t: _TermState(deque(maxlen=self.config.samples)) for t in TERMS}
        self.pending: list[str] = []           # terms waiting for an idle gap, in the order they drifted
        self.idle_since: float | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=20)   # the last re-profiles, for /v1/status
        self.reasons: dict[str, str] = {}      # why each pending term is pending
        self.count = {t: 0 for t in TERMS}

    # --- fed by the audit (every measured iteration) -------------------------------------------------
    def observe(self, kind: str, predicted_s: float, measured_s: float, now: float) -> None:
        self.idle_since = None             # an iteration ran: the engine is busy
        if predicted_s <= 0 or measured_s <= 0:
            return
        term = term_of(kind)
        st = self.terms[term]
        st.residuals.append(math.log(predicted_s / measured_s))
        bias = self.bias(term)
        if bias is None or abs(bias) <= self.config.threshold:
            st.biased_since = None
            return
        if st.biased_since is None:
            st.biased_since = now
        if now - st.biased_since >= self.config.window_s:
            self._ask(term, f"residual median log(pred/meas) {bias:+.2f} for {now - st.biased_since:.0f} s", now)

    def _ask(self, term: str, reason: str, now: float) -> None:
        if term not in self.pending and now - self.terms[term].last_reprofile_s >= self.config.cooldown_s:
            self.pending.append(term)
            self.reasons[term] = reason

    def bias(self, term: str) -> float | None:
        """Median log(predicted / measured) of the term's last `samples` iterations (None until full)."""
        res = self.terms[term].residuals
        return statistics.median(res) if len(res) == res.maxlen else None

    # --- asked by the engine ---------------------------------------------------------------------------
    def idle(self, now: float) -> None:
        """The engine has nothing to run at `now` (called on each idle pass)."""
        if self.idle_since is None:
            self.idle_since = now

    def settled(self, factors: dict[str, float], now: float) -> None:
        """The idle re-check (module docstring): `factors` are the model's online factors per term (1: as last
        measured); one moved beyond `recheck_factor` is asked for once the engine has been idle long enough."""
        limit = self.config.recheck_factor
        if limit is None or self.idle_since is None or now - self.idle_since < self.config.recheck_idle_s:
            return
        for term in TERMS:
            factor = factors[term]
            if abs(math.log(factor)) > math.log1p(limit):
                self._ask(term, f"online factor {factor:.2f} after {now - self.idle_since:.0f} s idle", now)

    def due(self, now: float) -> str | None:
        """The term to re-profile now, or None: one is pending and the engine has been idle long enough."""
        if not self.pending or self.idle_since is None or now - self.idle_since < self.config.min_idle_s:
            return None
        return self.pending[0]

    def reprofiled(self, term: str, now: float, event: dict[str, Any]) -> None:
        """A re-profile of `term` ran: its residual history is about the old coefficients, so it starts over."""
        if term in self.pending:
            self.pending.remove(term)
        reason = self.reasons.pop(term, None)
        st = self.terms[term]
        st.residuals.clear()
        st.biased_since = None
        st.last_reprofile_s = now
        self.count[term] += 1
        self.events.append({"term": term, "at_s": now, "reason": reason, **event})

    def status(self) -> dict[str, Any]:
        return {"pending": list(self.pending), "why": dict(self.reasons), "reprofiles": dict(self.count),
                "recent": list(self.events),
                "bias": {t: self.bias(t) for t in TERMS},
                "biased_since_s": {t: self.terms[t].biased_since for t in TERMS},
                "settings": {"threshold": self.config.threshold, "samples": self.config.samples,
                             "window_s": self.config.window_s, "min_idle_s": self.config.min_idle_s,
                             "cooldown_s": self.config.cooldown_s, "recheck_factor": self.config.recheck_factor,
                             "recheck_idle_s": self.config.recheck_idle_s}}


def rebase_term(model: LatencyModel, term: str, samples: list[IterationSample]) -> float:
    """Replace `term`'s scale by what `samples` (fresh measurements of that term alone) say: every coefficient of
    the term x the median measured / profiled ratio, and the term's online factor back to 1. Returns the new
    effective scale relative to the old one (new prediction / old prediction). The term's shape (the decode
    table's levels, prefill's curve with the form learnt online, `LatencyModel.prefill_shape`) is kept: a few
    shapes measure its level, not its form."""
    if term not in TERMS:
        raise ValueError(f"unknown latency term {term!r}; one of {TERMS}")
    if term == "decode":
        pairs = [(s.seconds, model.decode_time(s.num_decode, s.decode_ctx, s.decode_ctx_max) / model.decode_factor)
                 for s in samples if s.num_decode > 0 and s.prefill_tokens == 0]
    else:
        pairs = [(s.seconds, model.prefill_time(s.prefill_tokens, s.prefill_ctx) / model.prefill_factor)
                 for s in samples if s.num_decode == 0 and s.prefill_tokens > 0]
    ratios = [m / p for m, p in pairs if m > 0 and p > 0]
    if not ratios:
        raise ValueError(f"no {term} sample to re-profile from")
    ratio = statistics.median(ratios)
    if term == "decode":
        old = model.decode_factor
        model.decode_table_s = [t * ratio for t in model.decode_table_s]
        model.ctx_coef_s *= ratio
        model.ctx_iter_coef_s *= ratio
        model.decode_factor = 1.0
    else:
        old = model.prefill_factor
        model.prefill_base_s *= ratio
        model.prefill_per_token_s *= ratio
        model.prefill_quad_s *= ratio
        model.prefill_attn_s *= ratio
        model.prefill_factor = 1.0
    return ratio / old
