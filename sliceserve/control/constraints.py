"""SLO expressions for a class or the whole server, parsed into constraints the controller enforces.

Grammar (terms separated by ',' or ';' or the word 'and'):
    [pNN] (ttft|tpot|itl|e2e) (<=|<) NUMBER (ms|s|us)     latency: per request, or a percentile target
    throughput (>=|>) NUMBER (tok/s|tokens/s)              batch classes / the server
    memory (<=|<) NUMBER (B|KB|MB|GB|KiB|MiB|GiB)          server only
    power (<=|<) NUMBER (W|mW)                             server only
Examples: `p99 ttft <= 500ms`, `p90 tpot <= 80ms`, `throughput >= 40 tok/s`, `memory <= 2GB`, `power <= 15W`.

A latency term without a percentile is a per-request bound (what `sliceserve.slo.SLO` holds and the
scheduler enforces request by request). With a percentile it is a distribution target over the class's
recent requests: the scheduler cannot see it, so the controller enforces it (see controller.py).
Values are converted once to SI units: seconds, tokens/s, bytes, watts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sliceserve.slo import SLO

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {"tok/s": 1.0, "tokens/s": 1.0, "token/s": 1.0}
_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_POWER_UNITS = {"w": 1.0, "mw": 1e-3}
_TERM = re.compile(
    r"^\s*(?:[pP](?P<pct>[0-9]+(?:\.[0-9]+)?)\s+)?(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|<|>|=)\s*"
    r"(?P<value>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[A-Za-z/]*)\s*$")
_SPLIT = re.compile(r"\s*(?:,|;|\band\b)\s*")


@dataclass(frozen=True, slots=True)
class Constraint:
    metric: str                  # ttft | tpot | itl | e2e | throughput | memory | power
    bound: float                 # SI units: s, tok/s, bytes, W
    percentile: float | None = None   # 0 < p < 100 for distribution targets; None = per request / absolute
    text: str = ""

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCY_METRICS

    @property
    def is_upper(self) -> bool:
        """True for `<=` targets (latency, memory, power); throughput is a lower bound."""
        return self.metric != "throughput"

    def satisfied_by(self, measured: float | None) -> bool | None:
        """Whether a measured value meets the target; None when nothing was measured."""
        if measured is None:
            return None
        return measured <= self.bound if self.is_upper else measured >= self.bound


@dataclass(frozen=True, slots=True)
class ConstraintSet:
    scope: str                                  # "class" or "server"
    constraints: tuple[Constraint, ...] = ()

    def __iter__(self):
        return iter(self.constraints)

    def __len__(self) -> int:
        return len(self.constraints)

    def get(self, metric: str, percentile: float | None = None) -> Constraint | None:
        for c in self.constraints:
            if c.metric == metric and c.percentile == percentile:
                return c
        return None

    @property
    def percentile_targets(self) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if c.is_latency and c.percentile is not None)

    def request_slo(self) -> SLO:
        """The per-request bounds (terms without a percentile) as the scheduler's SLO. ITL has no
        per-request field in SLO: a per-request itl bound is enforced as a TPOT bound would not be, so it
        is rejected at parse time instead (see `parse_constraints`)."""
        bounds = {c.metric: c.bound for c in self.constraints if c.is_latency and c.percentile is None}
        return SLO(ttft_s=bounds.get("ttft"), tpot_s=bounds.get("tpot"), e2e_s=bounds.get("e2e"))


def _unit(table: dict, unit: str, term: str, what: str) -> float:
    factor = table.get(unit.lower() if table is not _TIME_UNITS else unit)
    if factor is None:
        raise ValueError(f"unknown {what} unit {unit!r} in {term!r}; use {', '.join(table)}")
    return factor


def parse_term(term: str, scope: str = "class") -> Constraint:
    text = term.strip()
    m = _TERM.match(text)
    if not m:
        raise ValueError(f"cannot parse SLO term {text!r}; write e.g. 'p99 ttft <= 500ms', "
                         "'throughput >= 40 tok/s', 'memory <= 2GB' or 'power <= 15W'")
    metric, op, unit = m["metric"].lower(), m["op"], m["unit"]
    value = float(m["value"])
    pct = float(m["pct"]) if m["pct"] is not None else None
    if pct is not None and not 0 < pct < 100:
        raise ValueError(f"percentile p{m['pct']} in {text!r} must be between 0 and 100 (exclusive), e.g. p99")
    if not unit:
        example = {"throughput": " tok/s", "memory": "GB", "power": "W"}.get(metric, "ms")
        raise ValueError(f"SLO term {text!r} has no unit; write e.g. {metric} {op} {m['value']}{example}")
    if metric in LATENCY_METRICS:
        if op not in ("<=", "<"):
            raise ValueError(f"latency target {text!r} must be an upper bound: write {metric} <= VALUE")
        if metric == "itl" and pct is None:
            raise ValueError(f"{text!r}: a per-request itl bound is not enforceable (the scheduler bounds the "
                             "mean gap, tpot); give a percentile (e.g. p99 itl <= 200ms) or use tpot")
        bound = value * _unit(_TIME_UNITS, unit, text, "time")
    elif metric == "throughput":
        if op not in (">=", ">"):
            raise ValueError(f"throughput target {text!r} must be a lower bound: write throughput >= VALUE tok/s")
        bound = value * _unit(_RATE_UNITS, unit, text, "throughput")
    elif metric in ("memory", "power"):
        if op not in ("<=", "<"):
            raise ValueError(f"resource target {text!r} must be an upper bound: write {metric} <= VALUE")
        if scope != "server":
            raise ValueError(f"{text!r}: {metric} is a resource of the whole server, not of one class; "
                             "put it in the server's SLO")
        bound = value * (_unit(_BYTE_UNITS, unit, text, "memory") if metric == "memory"
                         else _unit(_POWER_UNITS, unit, text, "power"))
    else:
        raise ValueError(f"unknown SLO metric {metric!r} in {text!r}; known: "
                         f"{', '.join(LATENCY_METRICS)}, throughput, memory, power")
    if pct is not None and metric not in LATENCY_METRICS:
        raise ValueError(f"{text!r}: percentiles apply to latency metrics ({', '.join(LATENCY_METRICS)}) only")
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound in {text!r} must be a positive number")
    return Constraint(metric, bound, pct, text)


def parse_constraints(expr: str, scope: str = "class") -> ConstraintSet:
    """Parse an SLO expression for one class (`scope="class"`) or the whole server (`scope="server"`)."""
    if scope not in ("class", "server"):
        raise ValueError(f"SLO scope must be 'class' or 'server', got {scope!r}")
    if not expr or not expr.strip():
        raise ValueError("empty SLO expression; write e.g. 'p99 ttft <= 500ms, tpot <= 80ms'")
    seen: dict[tuple[str, float | None], str] = {}
    out: list[Constraint] = []
    for term in _SPLIT.split(expr.strip()):
        if not term:
            raise ValueError(f"empty term in SLO expression {expr!r} (stray separator?)")
        c = parse_term(term, scope)
        key = (c.metric, c.percentile)
        if key in seen:
            raise ValueError(f"SLO expression {expr!r} sets {c.metric}"
                             f"{'' if c.percentile is None else f' p{c.percentile:g}'} twice "
                             f"({seen[key]!r} and {c.text!r})")
        seen[key] = c.text
        out.append(c)
    return ConstraintSet(scope, tuple(out))
