"""Units of SLO quantities, converted once to SI (seconds, tokens/s, bytes, watts) and written back.

Each dimension has one table; the first unit of a table is the one a bound is written in when it reads back
exactly, the last is the SI unit (exact always). Time and power units are case-sensitive (`mW` is not
`MW`); size and rate units are not (`1.5GB` = `1.5gb`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass


def _scale(value: float, factor: float) -> float:
    """value x factor, dividing for sub-units: "350ms" is exactly 0.35 (350 * 1e-3 is 0.35000000000000003)."""
    return value / round(1.0 / factor) if factor < 1.0 else value * factor


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str                        # what the error messages call it: "time", "size", ...
    units: dict[str, float]          # unit -> SI factor; preferred unit first, SI unit last
    case_sensitive: bool

    def factor(self, unit: str, context: str) -> float:
        key = unit if self.case_sensitive else unit.lower()
        table = self.units if self.case_sensitive else {u.lower(): f for u, f in self.units.items()}
        if key not in table:
            raise ValueError(f"unknown {self.name} unit {unit!r} in {context!r}; use {', '.join(self.units)}")
        return table[key]

    def to_si(self, value: float, unit: str, context: str) -> float:
        si = _scale(value, self.factor(unit, context))
        if not (math.isfinite(si) and si > 0):
            raise ValueError(f"bound in {context!r} must be a positive number, got {value!r}{unit}")
        return si

    def format(self, si: float) -> str:
        """`si` in the unit with the shortest number that reads back to exactly the same float (parsing
        scales by the factor); ties go to the earlier unit of the table."""
        exact = []
        for unit, f in self.units.items():
            number = repr(si / f).removesuffix(".0")
            if _scale(float(number), f) == si:
                exact.append((len(number), number, unit))
        _, number, unit = min(exact, key=lambda e: e[0])   # min keeps the first of equals
        return f"{number} {unit}" if "/" in unit else f"{number}{unit}"


TIME = Dimension("time", {"ms": 1e-3, "s": 1.0, "us": 1e-6}, case_sensitive=True)
RATE = Dimension("throughput", {"tok/s": 1.0, "tokens/s": 1.0, "token/s": 1.0}, case_sensitive=False)
SIZE = Dimension("memory", {"MB": 1e6, "GB": 1e9, "KB": 1e3, "TB": 1e12, "MiB": 2.0**20, "GiB": 2.0**30,
                            "KiB": 2.0**10, "TiB": 2.0**40, "B": 1.0}, case_sensitive=False)
POWER = Dimension("power", {"W": 1.0, "mW": 1e-3, "w": 1.0}, case_sensitive=True)

NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_QUANTITY = re.compile(rf"\s*({NUMBER})\s*([A-Za-z/]*)\s*")


def _quantity(dim: Dimension, text: str, example: str) -> float:
    m = _QUANTITY.fullmatch(text)
    if not m:
        raise ValueError(f"cannot read a {dim.name} from {text!r}; write e.g. {example}")
    if not m.group(2):
        raise ValueError(f"{dim.name} {text.strip()!r} has no unit; write e.g. {example}")
    return dim.to_si(float(m.group(1)), m.group(2), text.strip())


def parse_duration(text: str) -> float:
    """'200ms' / '1.5s' / '300us' -> seconds. A bare number is rejected: the unit must be stated."""
    return _quantity(TIME, text, "200ms or 1.5s")


def parse_size(text: str) -> float:
    """'700MB' / '1.5GiB' / '512 KiB' -> bytes."""
    return _quantity(SIZE, text, "700MB or 1.5GiB")
