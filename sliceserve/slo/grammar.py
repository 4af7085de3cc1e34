"""The one SLO grammar: text -> typed constraints (`ConstraintSet`), checked against the scope enforcing it.

    EXPR  := TERM ((',' | ';' | 'and') TERM)*
    TERM  := [pNN | mean] (ttft|tpot|itl|e2e) (<=|<) NUMBER (ms|s|us)
           | throughput (>=|>) NUMBER (tok/s|tokens/s)
           | memory (<=|<) NUMBER (B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)
           | power (<=|<) NUMBER (W|mW)

Examples: `p99 ttft <= 350ms`, `p90 tpot<=0.08s`, `mean e2e <= 2s`, `throughput >= 25 tok/s`,
`memory <= 1.5GB`, `power <= 9W`. Metrics and `pNN`/`mean` are case-insensitive. Where each term can be
enforced is sliceserve.slo.terms's business; `parse_slo(expr, scope)` refuses a term its scope cannot enforce.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from sliceserve.slo.bounds import SLO
from sliceserve.slo.terms import METRICS, SCOPES, Constraint, Scope
from sliceserve.slo.units import NUMBER

_HEAD = re.compile(r"(?:(?P<stat>[pP]\S*|(?i:mean))\s+)?(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<rest>.*)", re.S)
_REST = re.compile(rf"(?P<op><=|>=|<|>)\s*(?P<value>{NUMBER})\s*(?P<unit>[A-Za-z/]*)")
_PCT = re.compile(rf"[pP](?P<pct>{NUMBER})")
_SPLIT = re.compile(r"\s*(?:,|;|\band\b)\s*")
_EXAMPLES = "e.g. 'p99 ttft <= 350ms', 'tpot <= 80ms', 'throughput >= 25 tok/s', 'memory <= 1.5GB' or 'power <= 9W'"


def _statistic(stat: str | None, metric: str, text: str) -> tuple[float | None, bool]:
    """(percentile, mean) from the optional prefix."""
    if stat is None:
        return None, False
    if not METRICS[metric].latency:
        raise ValueError(f"{text!r}: percentiles and means apply to latency metrics "
                         f"({', '.join(m for m, s in METRICS.items() if s.latency)}) only")
    if stat.lower() == "mean":
        return None, True
    m = _PCT.fullmatch(stat)
    if not m:
        raise ValueError(f"cannot parse SLO term {text!r}: {stat!r} is no statistic; write pNN (e.g. p99) or mean")
    pct = float(m["pct"])
    if not 0 < pct < 100:
        raise ValueError(f"percentile {stat} in {text!r} must be between 0 and 100 (exclusive), e.g. p99")
    return pct, False


def _label(c: Constraint) -> str:
    return ("mean " if c.mean else "" if c.percentile is None else f"p{c.percentile:g} ") + c.metric


def parse_term(term: str) -> Constraint:
    """One term -> a Constraint in SI units, whatever scope will enforce it (see `parse_slo`)."""
    text = term.strip()
    head = _HEAD.fullmatch(text)
    if not head or not text:
        raise ValueError(f"cannot parse SLO term {text!r}; write [pNN|mean] METRIC OP VALUE UNIT, {_EXAMPLES}")
    metric = head["metric"].lower()
    spec = METRICS.get(metric)
    if spec is None:
        raise ValueError(f"unknown SLO metric {metric!r} in {text!r}; known: {', '.join(METRICS)}")
    rest = _REST.fullmatch(head["rest"].strip())
    want = "<=" if spec.upper else ">="
    if not rest:
        raise ValueError(f"cannot parse SLO term {text!r}: after {metric!r} write {want} NUMBER UNIT, {_EXAMPLES}")
    if (rest["op"] in ("<=", "<")) != spec.upper:
        kind = "an upper" if spec.upper else "a lower"
        raise ValueError(f"{metric} target {text!r} must be {kind} bound: write {metric} {want} VALUE")
    percentile, mean = _statistic(head["stat"], metric, text)
    if not rest["unit"]:
        example = next(iter(spec.dimension.units))
        raise ValueError(f"SLO term {text!r} has no unit; write e.g. {metric} {want} {rest['value']}{example}")
    bound = spec.dimension.to_si(float(rest["value"]), rest["unit"], text)
    c = Constraint(metric, bound, percentile, mean, text)
    if not c.scopes:
        raise ValueError(c.why_not("request"))
    return c


@dataclass(frozen=True, slots=True)
class ConstraintSet:
    """A parsed SLO expression. `scope` is the scope it was checked against (None: not checked)."""
    scope: Scope | None = None
    constraints: tuple[Constraint, ...] = ()

    def __iter__(self) -> Iterator[Constraint]:
        return iter(self.constraints)

    def __len__(self) -> int:
        return len(self.constraints)

    def get(self, metric: str, percentile: float | None = None, mean: bool = False) -> Constraint | None:
        for c in self.constraints:
            if c.metric == metric and c.percentile == percentile and c.mean == mean:
                return c
        return None

    def within(self, scope: Scope) -> "ConstraintSet":
        """This set checked against `scope`: ValueError naming the first term the scope cannot enforce."""
        if scope not in SCOPES:
            raise ValueError(f"SLO scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        for c in self.constraints:
            if scope not in c.scopes:
                raise ValueError(c.why_not(scope))
        return ConstraintSet(scope, self.constraints)

    def request_slo(self) -> SLO:
        """The per-request bounds (ttft, tpot, e2e without a statistic) as the scheduler's SLO."""
        bounds = {c.metric: c.bound for c in self.constraints if c.is_request_bound}
        return SLO(ttft_s=bounds.get("ttft"), tpot_s=bounds.get("tpot"), e2e_s=bounds.get("e2e"))

    def targets(self) -> "ConstraintSet":
        """The terms only the controller can enforce: statistics over a class, throughput, resources."""
        return ConstraintSet(self.scope, tuple(c for c in self.constraints if not c.is_request_bound))

    def scaled(self, factor: float, ttft_factor: float | None = None) -> "ConstraintSet":
        """Latency bounds times `factor` (TTFT's times `ttft_factor` when given); others unchanged."""
        pick = lambda c: ttft_factor if c.metric == "ttft" and ttft_factor is not None else factor  # noqa: E731
        return ConstraintSet(self.scope, tuple(c.scaled(pick(c)) if c.is_latency else c for c in self.constraints))

    def format(self) -> str:
        return ", ".join(c.format() for c in self.constraints)


def parse_slo(expr: str, scope: Scope | None = None) -> ConstraintSet:
    """Parse an SLO expression into typed constraints; with `scope`, refuse any term that scope cannot
    enforce. The per-request bounds the scheduler needs are `parse_slo(expr).request_slo()`."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"SLO scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not expr or not expr.strip():
        raise ValueError(f"empty SLO expression; write {_EXAMPLES}")
    seen: dict[tuple[str, float | None, bool], str] = {}
    out: list[Constraint] = []
    for term in _SPLIT.split(expr.strip()):
        if not term:
            raise ValueError(f"empty term in SLO expression {expr!r} (stray separator?)")
        c = parse_term(term)
        key = (c.metric, c.percentile, c.mean)
        if key in seen:
            raise ValueError(f"SLO expression {expr!r} sets {_label(c)} twice "
                             f"({seen[key]!r} and {c.text!r})")
        seen[key] = c.text
        out.append(c)
    spec = ConstraintSet(None, tuple(out))
    return spec if scope is None else spec.within(scope)
