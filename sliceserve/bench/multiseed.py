"""Markdown tables of a multi-seed policy comparison ({seed: sweep}, see bench/pareto.py): seed means
per rate, the Pareto table, and the acceptance checks of one chosen policy against the others."""
from __future__ import annotations

from sliceserve.bench.pareto import by_rate, dominators, mean_metric, pareto_rows


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def md(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def goodput(points: dict, policy: str, duration_s: float) -> float | None:
    """Requests that met every SLO per second of arrivals, seed mean. Unlike vLLM bench's goodput (met /
    makespan) it does not grow when a policy refuses work and so finishes sooner."""
    met = mean_metric(points, policy, "num_met")
    return None if met is None else met / duration_s


def mean_table(sweeps: dict[int, list[dict]], policies: list[str], classes: list[str], duration_s: float) -> str:
    """Per rate and policy, means over seeds: attainment overall and per class, utility-weighted
    attainment, goodput (met / s of arrivals, and vLLM bench's met / makespan), mean and p99 completion
    time of completed requests, rejections."""
    rows = []
    for rate, points in by_rate(sweeps).items():
        n = sum(p["num_requests"] for p in points.values()) / len(points)
        for pol in policies:
            m = lambda key, cls=None: mean_metric(points, pol, key, cls)  # noqa: E731
            rows.append([f"{rate:g}", f"{n:.0f}", pol, _f(m("slo_attainment"))] +
                        [_f(m("slo_attainment", c)) for c in classes] +
                        [_f(m("utility_attainment")), _f(goodput(points, pol, duration_s)), _f(m("goodput_rps")),
                         _f(m("mean_e2e_s"), ".2f"), _f(m("p99_e2e_s"), ".1f"), _f(m("num_rejected"), ".1f")])
    return md(["rate", "arrivals", "policy", "attain"] + classes +
              ["util-attain", "goodput rps", "vLLM goodput", "mean e2e s", "p99 e2e s", "rejected"], rows)


def pareto_table(sweeps: dict[int, list[dict]], classes: list[str], tol: float = 0.0) -> str:
    """Rows only for policies that some other policy dominates on some seed, plus a line per rate with
    the undominated ones."""
    rows, free = [], {}
    for rate, pol, text in pareto_rows(sweeps, classes, tol):
        if text == "-":
            free.setdefault(rate, []).append(pol)
        else:
            rows.append([f"{rate:g}", pol, text])
    table = md(["rate", "policy", "dominated by (seeds)"], rows)
    never = md(["rate", "dominated on no seed"], [[f"{r:g}", ", ".join(p)] for r, p in free.items()])
    return table + "\n\n" + never


def _best_other(points: dict, chosen: str, policies: list[str], key) -> tuple[str, float | None]:
    vals = [(p, key(p)) for p in policies if p != chosen]
    vals = [(p, v) for p, v in vals if v is not None]
    return max(vals, key=lambda pv: pv[1]) if vals else ("-", None)


def _ratio(a: float | None, b: float | None, fmt: str = ".2f") -> str:
    return "-" if a is None or not b else format(a / b, fmt)


def acceptance_table(sweeps: dict[int, list[dict]], policies: list[str], classes: list[str], chosen: str,
                     duration_s: float, overload_peers: tuple[str, ...] = ("scorpio", "qoserve", "sliding")) -> str:
    """Issue 21's checks of `chosen` per rate: dominated on any seed, goodput and utility attainment
    against the best other policy, realtime and nrt attainment against sliding, mean completion time
    against orca and the fastest policy, goodput against the best of `overload_peers`."""
    rows = []
    for rate, points in by_rate(sweeps).items():
        dom = sorted({q for pt in points.values() for q in dominators(pt, classes).get(chosen, [])})
        good = lambda p: goodput(points, p, duration_s)  # noqa: E731
        util = lambda p: mean_metric(points, p, "utility_attainment")  # noqa: E731
        g, u = good(chosen), util(chosen)
        bg_pol, bg = _best_other(points, chosen, policies, good)
        bu_pol, bu = _best_other(points, chosen, policies, util)
        cls = lambda pol, c: mean_metric(points, pol, "slo_attainment", c)  # noqa: E731
        diff = lambda c: (None if cls(chosen, c) is None or cls("sliding", c) is None  # noqa: E731
                          else 100 * (cls(chosen, c) - cls("sliding", c)))
        e2e = {p: mean_metric(points, p, "mean_e2e_s") for p in policies}
        fastest = min((v for p, v in e2e.items() if v is not None and p != chosen), default=None)
        peer_g = max((good(p) or 0.0 for p in overload_peers if p in policies),
                     default=None)
        rows.append([f"{rate:g}", ", ".join(dom) or "none", f"{_ratio(g, bg)} ({bg_pol})",
                     f"{_ratio(u, bu)} ({bu_pol})", _f(cls(chosen, "realtime")),
                     _f(diff("nrt-100"), "+.1f"), _f(diff("nrt-120"), "+.1f"),
                     _ratio(e2e.get(chosen), e2e.get("orca")), _ratio(e2e.get(chosen), fastest),
                     _ratio(g, peer_g)])
    return md(["rate", f"{chosen} dominated by", "goodput / best other", "util-attain / best other",
               "realtime", "nrt-100 vs sliding (pts)", "nrt-120 vs sliding (pts)", "mean e2e / orca",
               "mean e2e / fastest other", "goodput / best of " + "/".join(overload_peers)], rows)
