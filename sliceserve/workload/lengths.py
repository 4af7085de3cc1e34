"""Token-length distributions, written as short strings on the command line and in presets.

    fixed:N                      always N
    uniform:A:B                  integers A..B, both included
    lognormal:MEDIAN:SIGMA[:MAX] exp(Normal(ln MEDIAN, SIGMA)), rounded, at least 1, at most MAX
                                 (mean = MEDIAN * exp(SIGMA**2 / 2) before the cap)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_FORMS = "fixed:N, uniform:A:B or lognormal:MEDIAN:SIGMA[:MAX]"


@dataclass(frozen=True, slots=True)
class LengthDist:
    kind: str                 # fixed | uniform | lognormal
    a: float                  # N, A, or MEDIAN
    b: float = 0.0            # B, or SIGMA
    cap: int | None = None    # MAX for lognormal
    text: str = ""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` lengths (int64, each >= 1) drawn from `rng`."""
        if self.kind == "fixed":
            return np.full(n, int(self.a), dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, size=n, dtype=np.int64)
        values = np.rint(rng.lognormal(math.log(self.a), self.b, size=n)).astype(np.int64)
        values = np.maximum(values, 1)
        return np.minimum(values, self.cap) if self.cap is not None else values

    def max_value(self) -> int | None:
        """The largest length this distribution can produce (None: unbounded)."""
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return int(self.b)
        return self.cap

    def __str__(self) -> str:
        return self.text


def _positive_int(text: str, what: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} in length distribution {spec!r} must be an integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what} in length distribution {spec!r} must be >= 1, got {value}")
    return value


def parse_length_dist(spec: str) -> LengthDist:
    """Parse one of the forms in the module docstring; anything else raises ValueError."""
    parts = [p.strip() for p in spec.strip().split(":")]
    kind = parts[0].lower()
    if kind == "fixed" and len(parts) == 2:
        return LengthDist("fixed", _positive_int(parts[1], "N", spec), text=spec)
    if kind == "uniform" and len(parts) == 3:
        lo, hi = _positive_int(parts[1], "A", spec), _positive_int(parts[2], "B", spec)
        if hi < lo:
            raise ValueError(f"uniform length distribution {spec!r} needs A <= B")
        return LengthDist("uniform", lo, hi, text=spec)
    if kind == "lognormal" and len(parts) in (3, 4):
        median = _positive_int(parts[1], "MEDIAN", spec)
        try:
            sigma = float(parts[2])
        except ValueError:
            raise ValueError(f"SIGMA in length distribution {spec!r} must be a number, got {parts[2]!r}") from None
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"SIGMA in length distribution {spec!r} must be >= 0")
        cap = _positive_int(parts[3], "MAX", spec) if len(parts) == 4 else None
        if cap is not None and cap < median:
            raise ValueError(f"MAX in length distribution {spec!r} must be >= MEDIAN")
        return LengthDist("lognormal", median, sigma, cap, text=spec)
    raise ValueError(f"cannot read length distribution {spec!r}; write {_FORMS}")
