"""Typed SLO constraints: what each metric measures, which way its bound points, and where it is enforceable.

Three scopes can enforce a constraint:
  request  the bounds one request carries (SLO): its scheduler meets them request by request;
  class    a named class of requests: its requests' default bounds, plus targets over the class's recent
           requests (a percentile or mean, throughput) that only the feedback controller can watch;
  server   the whole process: resource ceilings (memory, power).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sliceserve.slo.units import POWER, RATE, SIZE, TIME, Dimension

Scope = Literal["request", "class", "server"]
SCOPES: tuple[Scope, ...] = ("request", "class", "server")


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    dimension: Dimension
    upper: bool                       # True: `<=` bound (latency, memory, power); False: `>=` (throughput)
    latency: bool = False             # may carry a statistic (pNN, mean) over a class's requests
    per_request: bool = False         # a single request can carry it as a bound (ttft, tpot, e2e; not itl)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("ttft", TIME, True, latency=True, per_request=True),
    Metric("tpot", TIME, True, latency=True, per_request=True),
    Metric("e2e", TIME, True, latency=True, per_request=True),
    # Inter-token gaps of a class: the scheduler bounds the mean gap (tpot), not each one, so itl is only
    # ever a distribution target.
    Metric("itl", TIME, True, latency=True),
    Metric("throughput", RATE, False),
    Metric("memory", SIZE, True),
    Metric("power", POWER, True),
)}

_TO_CLASS = "give it to a class (slo_classes.NAME.slo in YAML, or --class-slo 'NAME=EXPR')"
_TO_SERVER = "put it in the server's SLO (server_slo in YAML, or --server-slo)"


@dataclass(frozen=True, slots=True)
class Constraint:
    """One term, in SI units: seconds, tokens/s, bytes, watts. `percentile` or `mean` make a latency term
    a target over a class's recent requests; without either it is a bound on each request."""
    metric: str
    bound: float
    percentile: float | None = None
    mean: bool = False
    text: str = field(default="", compare=False)     # as the user wrote it, for messages

    @property
    def spec(self) -> Metric:
        return METRICS[self.metric]

    @property
    def is_latency(self) -> bool:
        return self.spec.latency

    @property
    def is_upper(self) -> bool:
        """True for `<=` targets (latency, memory, power); throughput is a lower bound."""
        return self.spec.upper

    @property
    def is_statistic(self) -> bool:
        """A percentile or mean over a class's recent requests (not a bound one request can meet)."""
        return self.percentile is not None or self.mean

    @property
    def is_request_bound(self) -> bool:
        return self.spec.per_request and not self.is_statistic

    @property
    def scopes(self) -> tuple[Scope, ...]:
        """Where this constraint can be enforced (see the module docstring)."""
        if self.spec.dimension in (SIZE, POWER):
            return ("server",)
        if self.is_request_bound:
            return ("request", "class")
        if self.is_latency and not self.is_statistic:
            return ()          # a per-request itl bound: nothing enforces it
        return ("class",)

    def why_not(self, scope: Scope) -> str:
        """Why this constraint cannot be enforced in `scope` and where it can be, for error messages."""
        name = self.text or self.format()
        if not self.scopes:
            return (f"{name!r}: a per-request {self.metric} bound is not enforceable in any scope (the scheduler "
                    "bounds the mean gap, tpot); give a percentile (e.g. p99 itl <= 200ms) or use tpot")
        head = f"{name!r} cannot be enforced in scope {scope!r} (only in {' or '.join(map(repr, self.scopes))}): "
        if self.scopes == ("server",):
            return head + f"{self.metric} is a resource of the whole server, not of one {scope}; " + _TO_SERVER
        if scope == "server":
            return (head + "the server-wide SLO takes resource targets (memory, power); put latency and throughput "
                    f"targets on a class, e.g. slo_classes: {{realtime: {{slo: '{name}'}}}} or --class-slo "
                    f"'realtime={name}'")
        what = "a percentile or mean" if self.is_statistic else "throughput"
        return head + f"{what} is measured over a class's recent requests, not one request's bound; " + _TO_CLASS

    def satisfied_by(self, measured: float | None) -> bool | None:
        """Whether a measured value meets the target; None when nothing was measured."""
        if measured is None:
            return None
        return measured <= self.bound if self.is_upper else measured >= self.bound

    def scaled(self, factor: float) -> "Constraint":
        """The same constraint with its bound times `factor` (fits a latency target to a slower device)."""
        return Constraint(self.metric, self.bound * factor, self.percentile, self.mean, self.text)

    def format(self) -> str:
        """Canonical text that parses back to an equal constraint."""
        stat = "mean " if self.mean else "" if self.percentile is None else f"p{self.percentile!r}".removesuffix(".0") + " "
        op = "<=" if self.is_upper else ">="
        return f"{stat}{self.metric} {op} {self.spec.dimension.format(self.bound)}"
