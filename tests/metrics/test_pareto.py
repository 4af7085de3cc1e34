"""Per-class Pareto dominance, seed averaging and the acceptance table of simulate sweeps
(sliceserve/bench/pareto.py, multiseed.py)."""
from __future__ import annotations

from sliceserve.bench.multiseed import acceptance_table, goodput
from sliceserve.bench.pareto import by_rate, dominates, dominators, mean_metric, pareto_rows


def _res(per_class: dict[str, float | None], goodput: float = 0.0) -> dict:
    return {"summary": {"goodput_rps": goodput},
            "per_class": {c: {"slo_attainment": a} for c, a in per_class.items() if a is not None}}


def test_dominates_needs_ge_everywhere_and_gt_somewhere():
    assert dominates({"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 0.4})
    assert not dominates({"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 0.5})       # equal: no dominance
    assert not dominates({"a": 1.0, "b": 0.3}, {"a": 0.9, "b": 0.5})       # a trade-off
    assert not dominates({}, {})
    # Tolerance: within `tol` counts as equal, so a 1-point edge no longer dominates.
    assert not dominates({"a": 0.51}, {"a": 0.50}, tol=0.02)
    assert dominates({"a": 0.49, "b": 0.9}, {"a": 0.50, "b": 0.5}, tol=0.02)


def test_classes_without_arrivals_are_left_out():
    point = {"results": {"x": _res({"rt": 1.0, "nrt": None}), "y": _res({"rt": 0.5, "nrt": 0.9})}}
    # Only "rt" is shared: x dominates y on it; y's nrt figure cannot be compared with a missing one.
    assert dominators(point, ["rt", "nrt"]) == {"x": [], "y": ["x"]}


def test_pareto_rows_name_the_dominators_and_their_seeds():
    sweeps = {
        2: [{"rate": 1.0, "results": {"s": _res({"rt": 1.0, "n": 0.4}), "p": _res({"rt": 0.0, "n": 0.6}),
                                      "o": _res({"rt": 0.0, "n": 0.3})}}],
        3: [{"rate": 1.0, "results": {"s": _res({"rt": 1.0, "n": 0.7}), "p": _res({"rt": 0.0, "n": 0.8}),
                                      "o": _res({"rt": 0.0, "n": 0.6})}}],
    }
    rows = {(r, p): t for r, p, t in pareto_rows(sweeps, ["rt", "n"])}
    assert rows[(1.0, "s")] == "-"
    assert rows[(1.0, "p")] == "-"
    assert rows[(1.0, "o")] == "p (2,3); s (2,3)"


def test_mean_metric_averages_over_seeds_and_skips_missing():
    sweeps = {2: [{"rate": 0.5, "results": {"s": _res({"rt": 1.0}, goodput=0.2)}}],
              3: [{"rate": 0.5, "results": {"s": _res({"rt": 0.5}, goodput=0.4)}}],
              4: [{"rate": 0.5, "results": {"s": _res({"rt": None}, goodput=0.3)}}]}
    points = by_rate(sweeps)[0.5]
    assert abs(mean_metric(points, "s", "goodput_rps") - 0.3) < 1e-12
    assert abs(mean_metric(points, "s", "slo_attainment", "rt") - 0.75) < 1e-12
    assert mean_metric(points, "missing", "goodput_rps") is None


def _full(att: dict[str, float], met: int, e2e: float) -> dict:
    return {"summary": {"num_met": met, "utility_attainment": att.get("realtime", 0.0), "mean_e2e_s": e2e,
                        "goodput_rps": met / 10.0},
            "per_class": {c: {"slo_attainment": a} for c, a in att.items()}}


def test_acceptance_table_compares_the_chosen_policy_with_the_others():
    sweeps = {2: [{"rate": 1.0, "num_requests": 10, "results": {
        "slice": _full({"realtime": 1.0, "nrt-100": 0.5, "nrt-120": 0.5}, met=6, e2e=3.0),
        "sliding": _full({"realtime": 0.0, "nrt-100": 0.6, "nrt-120": 0.5}, met=4, e2e=4.0),
        "orca": _full({"realtime": 0.0, "nrt-100": 0.4, "nrt-120": 0.4}, met=3, e2e=2.0)}}]}
    points = by_rate(sweeps)[1.0]
    assert goodput(points, "slice", 20.0) == 6 / 20.0    # met per second of arrivals, not of makespan
    table = acceptance_table(sweeps, ["slice", "sliding", "orca"], ["realtime", "nrt-100", "nrt-120"], "slice", 20.0,
                             overload_peers=("sliding",))
    row = table.splitlines()[2].split(" | ")
    assert row[1] == "none"                     # nobody dominates slice
    assert row[2] == "1.50 (sliding)"           # goodput 0.3 vs the best other's 0.2
    assert row[5] == "-10.0" and row[6] == "+0.0"  # nrt-100 10 points under sliding, nrt-120 level
    assert row[7] == "1.50" and row[8] == "1.50"   # mean e2e 3.0 vs orca's 2.0 (also the fastest other)
    assert row[9].rstrip(" |") == "1.50"           # goodput vs the best of the overload peers
