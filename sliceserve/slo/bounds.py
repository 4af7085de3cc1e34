"""Per-request latency bounds (`SLO`) and named classes of requests (`SLOClass`).

Times are float seconds; SLO text is read by sliceserve.slo.grammar, HTTP's millisecond fields by the server.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

# A latency equal to its bound meets it. Timestamps are sums of float iteration times, so "equal" can
# land a few ulps above (20 steps of 50 ms summing to 1.0000000000000002 s); one nanosecond absorbs that
# without admitting any real miss. Shared by the metrics' verdicts and the schedulers' own checks.
FLOAT_SLACK_S = 1e-9

_METRICS = ("ttft", "tpot", "e2e")


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency bounds for one request; None means unconstrained."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ValueError(f"SLO bound {name} must be a positive number of seconds, got {value!r}")

    @property
    def is_empty(self) -> bool:
        return self.ttft_s is None and self.tpot_s is None and self.e2e_s is None

    def scaled(self, factor: float, ttft_factor: float | None = None) -> "SLO":
        """Bounds multiplied by `factor`, the TTFT by `ttft_factor` if given (fits a preset to a slower or
        faster device; prefill and decode need not slow down alike)."""
        ttft_factor = factor if ttft_factor is None else ttft_factor
        for f in (factor, ttft_factor):
            if not f > 0:
                raise ValueError(f"SLO scale factor must be positive, got {f!r}")
        mul = lambda v, f=factor: None if v is None else v * f  # noqa: E731
        return SLO(mul(self.ttft_s, ttft_factor), mul(self.tpot_s), mul(self.e2e_s))

    def merged(self, override: "SLO") -> "SLO":
        """This SLO with every bound that `override` sets replaced."""
        return replace(
            self,
            ttft_s=override.ttft_s if override.ttft_s is not None else self.ttft_s,
            tpot_s=override.tpot_s if override.tpot_s is not None else self.tpot_s,
            e2e_s=override.e2e_s if override.e2e_s is not None else self.e2e_s,
        )

    def to_expr(self) -> str:
        parts = [f"{m}<={getattr(self, m + '_s') * 1e3:g}ms" for m in _METRICS if getattr(self, m + "_s") is not None]
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class SLOClass:
    """A named class of requests sharing an SLO and a utility (the value of meeting it)."""

    name: str
    slo: SLO
    utility: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SLO class name must not be empty")
        if not (math.isfinite(self.utility) and self.utility > 0):
            raise ValueError(f"utility of class {self.name!r} must be a positive number, got {self.utility!r}")


# Built-in classes. Real-time follows the SLICE paper (TPOT 50 ms, utility 100; arXiv 2510.18544);
# the others are this project's defaults for a chat, a batch job and embeddings (prefill-only work whose one
# result is its vector: TTFT is its latency; utility below every other class, so SLICE ranks it last and the
# controller sheds it first, and a flood of it cannot take the real-time class's place).
BUILTIN_CLASSES: dict[str, SLOClass] = {
    c.name: c
    for c in (
        SLOClass("realtime", SLO(ttft_s=0.5, tpot_s=0.05), utility=100.0),
        SLOClass("interactive", SLO(ttft_s=1.0, tpot_s=0.1), utility=1.0),
        SLOClass("batch", SLO(e2e_s=60.0), utility=1.0),
        SLOClass("embedding", SLO(ttft_s=2.0), utility=0.5),
    )
}
