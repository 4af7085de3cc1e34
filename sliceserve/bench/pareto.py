"""Multi-seed policy comparison: per-class Pareto dominance and seed-averaged tables of simulate sweeps.

A sweep is what `sliceserve simulate --sweep-rate` writes under "sweep": a list of points
{rate, num_requests, results: {policy: {summary, per_class: {class: {...}}}}}.

Dominance (per rate and seed): policy A dominates B when A's attainment is >= B's on every SLO class
that had arrivals and > on at least one. A class without arrivals in the run is left out (it neither
helps nor hurts). `tol` widens ">=" and ">" by that many attainment points, for noise-aware reading.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable


def class_attainment(result: dict, classes: Iterable[str]) -> dict[str, float]:
    """{class: attainment} of one policy's result at one sweep point, classes with arrivals only."""
    out = {}
    for c in classes:
        att = result["per_class"].get(c, {}).get("slo_attainment")
        if att is not None:
            out[c] = float(att)
    return out


def dominates(a: dict[str, float], b: dict[str, float], tol: float = 0.0) -> bool:
    shared = [c for c in a if c in b]
    return (bool(shared) and all(a[c] >= b[c] - tol for c in shared)
            and any(a[c] > b[c] + tol for c in shared))


def dominators(point: dict, classes: list[str], tol: float = 0.0) -> dict[str, list[str]]:
    """{policy: [policies that dominate it]} at one sweep point."""
    att = {p: class_attainment(r, classes) for p, r in point["results"].items()}
    return {p: [q for q in att if q != p and dominates(att[q], att[p], tol)] for p in att}


def by_rate(sweeps: dict[int, list[dict]]) -> dict[float, dict[int, dict]]:
    """{rate: {seed: point}} from {seed: sweep}."""
    out: dict[float, dict[int, dict]] = {}
    for seed, sweep in sweeps.items():
        for point in sweep:
            out.setdefault(point["rate"], {})[seed] = point
    return dict(sorted(out.items()))


def mean_metric(points: dict[int, dict], policy: str, key: str, cls: str | None = None) -> float | None:
    """Mean over seeds of a summary metric (or a per-class one with `cls`); seeds without it are skipped."""
    vals = []
    for point in points.values():
        res = point["results"].get(policy)
        if res is None:
            continue
        src = res["summary"] if cls is None else res["per_class"].get(cls, {})
        v = src.get(key)
        if v is not None:
            vals.append(float(v))
    return statistics.fmean(vals) if vals else None


def pareto_rows(sweeps: dict[int, list[dict]], classes: list[str], tol: float = 0.0) -> list[tuple[float, str, str]]:
    """(rate, policy, 'dominated by Q (seeds ...); ...' or '-') for every rate and policy."""
    rows = []
    for rate, points in by_rate(sweeps).items():
        hits: dict[str, dict[str, list[int]]] = {}
        policies: list[str] = []
        for seed, point in sorted(points.items()):
            for p, qs in dominators(point, classes, tol).items():
                if p not in policies:
                    policies.append(p)
                for q in qs:
                    hits.setdefault(p, {}).setdefault(q, []).append(seed)
        for p in policies:
            text = "; ".join(f"{q} ({','.join(map(str, s))})" for q, s in sorted(hits.get(p, {}).items()))
            rows.append((rate, p, text or "-"))
    return rows
