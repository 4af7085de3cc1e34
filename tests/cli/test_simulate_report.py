"""Sweep helpers behind `simulate --sweep-rate`: rate ranges, ratios, DistServe goodput in the report."""
from __future__ import annotations

import pytest

from sliceserve.bench.report import focus_class, markdown_report
from sliceserve.bench.sweep import distserve_goodput, parse_rate_range
from sliceserve.slo import SLO, SLOClass


def test_rate_ranges() -> None:
    assert parse_rate_range("1:12:1") == [float(r) for r in range(1, 13)]
    assert parse_rate_range("0.1:0.5:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert parse_rate_range("2:3:5") == [2.0]
    for bad in ("1:2", "a:2:1", "0:2:1", "3:1:1", "1:2:0", "1:inf:1", "1:100000:1"):
        with pytest.raises(ValueError):
            parse_rate_range(bad)


def _point(rate: float, a: tuple[float, float, float], b: tuple[float, float, float]) -> dict:
    def res(att: float, rt: float, e2e: float) -> dict:
        return {"summary": {"slo_attainment": att, "mean_e2e_s": e2e, "goodput_rps": att * rate},
                "per_class": {"rt": {"slo_attainment": rt}}}
    return {"rate": rate, "results": {"A": res(*a), "B": res(*b)}}


def test_markdown_ratios_and_goodput() -> None:
    sweep = [_point(1, (1.0, 1.0, 2.0), (0.95, 0.9, 2.0)), _point(2, (0.9, 1.0, 3.0), (0.3, 0.0, 6.0)),
             _point(3, (0.6, 0.8, 4.0), (0.0, 0.0, 9.0))]
    assert distserve_goodput(sweep, "A") == 2 and distserve_goodput(sweep, "B") == 1
    assert distserve_goodput(sweep, "B", "rt") == 1 and distserve_goodput(sweep, "A", "rt") == 2
    md = markdown_report(sweep, ["A", "B"], ["rt"], "rt")
    assert "| 2 | B | 3.00x | inf | 2.00x |" in md      # 0.9/0.3, 1.0/0.0, 6.0/3.0
    assert "| 3 | B | inf | inf | 2.25x |" in md
    assert "| A | 2 | 2 |" in md and "| B | 1 | 1 |" in md


def test_focus_class_is_the_highest_utility() -> None:
    classes = {n: SLOClass(n, SLO(tpot_s=0.1), u) for n, u in (("b", 1.0), ("rt", 100.0), ("a", 1.0))}
    assert focus_class(classes) == "rt"
    assert focus_class({}) is None
