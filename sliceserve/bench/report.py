"""Text reports of simulation results: the stdout tables and the Markdown sweep report."""
from __future__ import annotations

from typing import Mapping

from sliceserve.bench.sweep import distserve_goodput
from sliceserve.slo import SLOClass


def focus_class(classes: Mapping[str, SLOClass]) -> str | None:
    """The class a report singles out: the highest utility (ties: first by name), i.e. `realtime` in edge-mix."""
    if not classes:
        return None
    return min(classes.values(), key=lambda c: (-c.utility, c.name)).name


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(num: float | None, den: float | None) -> str:
    """num/den as '2.50x'; 'inf' when only the denominator is zero; '-' when undefined."""
    if num is None or den is None:
        return "-"
    if den == 0:
        return "-" if num == 0 else "inf"
    return f"{num / den:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


_SUMMARY_COLS = [("n", "num_requests", "d"), ("done", "num_finished", "d"), ("rej", "num_rejected", "d"),
                 ("attain", "slo_attainment", ".3f"), ("util", "utility_attainment", ".3f"),
                 ("ttft_ok", "ttft_attainment", ".3f"), ("tpot_ok", "tpot_attainment", ".3f"),
                 ("mean_ttft", "mean_ttft_s", ".3f"), ("p99_ttft", "p99_ttft_s", ".3f"),
                 ("mean_tpot", "mean_tpot_s", ".4f"), ("p99_tpot", "p99_tpot_s", ".4f"),
                 ("mean_e2e", "mean_e2e_s", ".2f"), ("goodput", "goodput_rps", ".3f"),
                 ("tok/s", "throughput_tok_s", ".1f")]


def summary_table(results: Mapping[str, dict]) -> str:
    """One row per policy and class (overall first); times in seconds."""
    rows = []
    for policy, res in results.items():
        groups = [("ALL", res["summary"])] + sorted(res["per_class"].items())
        for cls, s in groups:
            rows.append([policy, cls] + [_f(s.get(key), fmt) for _, key, fmt in _SUMMARY_COLS])
    return _table(["policy", "class"] + [c for c, _, _ in _SUMMARY_COLS], rows)


def sweep_table(sweep: list[dict], policies: list[str], focus: str | None) -> str:
    """Per rate and policy: overall and focus-class attainment, mean completion time, goodput."""
    rows = []
    for point in sweep:
        for policy in policies:
            res = point["results"][policy]
            fc = res["per_class"].get(focus, {}) if focus else {}
            rows.append([f"{point['rate']:g}", policy, _f(res["summary"]["slo_attainment"]),
                         _f(fc.get("slo_attainment")), _f(res["summary"]["mean_e2e_s"], ".2f"),
                         _f(res["summary"]["goodput_rps"])])
    return _table(["rate", "policy", "attain", f"{focus or '-'}_attain", "mean_e2e_s", "goodput_rps"], rows)


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_report(sweep: list[dict], policies: list[str], classes: list[str], focus: str | None,
                    title: str = "Simulated SLO attainment vs arrival rate") -> str:
    """The sweep as Markdown: main table, per-class attainment, ratios of the first policy, DistServe goodput."""
    lines = [f"# {title}", "",
             "Attainment = share of all arrivals meeting every SLO (rejected/aborted = missed). Mean e2e = mean "
             "completion time of completed requests. Goodput = requests/s meeting all SLOs (vLLM bench).", ""]
    rows = []
    for point in sweep:
        for policy in policies:
            s = point["results"][policy]["summary"]
            fc = point["results"][policy]["per_class"].get(focus, {}) if focus else {}
            rows.append([f"{point['rate']:g}", policy, _f(s["slo_attainment"]), _f(fc.get("slo_attainment")),
                         _f(s["mean_e2e_s"], ".2f"), _f(s["goodput_rps"])])
    lines += _md(["rate (req/s)", "policy", "attainment", f"{focus or '-'} attainment", "mean e2e (s)",
                  "goodput (req/s)"], rows)
    lines += ["", "## Attainment per class", ""]
    rows = [[f"{p['rate']:g}", pol] + [_f(p["results"][pol]["per_class"].get(c, {}).get("slo_attainment"))
                                       for c in classes] for p in sweep for pol in policies]
    lines += _md(["rate", "policy"] + classes, rows)
    if len(policies) > 1:
        first = policies[0]
        lines += ["", f"## {first} vs each other policy", "",
                  f"Attainment ratios are {first} / other (higher favours {first}); the completion-time ratio "
                  f"is other / {first} (higher favours {first}).", ""]
        rows = []
        for point in sweep:
            mine = point["results"][first]
            for other in policies[1:]:
                theirs = point["results"][other]
                row = [f"{point['rate']:g}", other,
                       _ratio(mine["summary"]["slo_attainment"], theirs["summary"]["slo_attainment"])]
                row += [_ratio(mine["per_class"].get(c, {}).get("slo_attainment"),
                               theirs["per_class"].get(c, {}).get("slo_attainment")) for c in classes]
                row.append(_ratio(theirs["summary"]["mean_e2e_s"], mine["summary"]["mean_e2e_s"]))
                rows.append(row)
        lines += _md(["rate", "vs", "attainment"] + [f"{c} attainment" for c in classes] + ["completion time"], rows)
    lines += ["", "## DistServe goodput", "",
              "Highest swept rate at which attainment stays >= 90% at it and every lower swept rate.", ""]
    rows = [[pol, _f(distserve_goodput(sweep, pol), "g")] +
            ([_f(distserve_goodput(sweep, pol, focus), "g")] if focus else []) for pol in policies]
    lines += _md(["policy", "overall (req/s)"] + ([f"{focus} (req/s)"] if focus else []), rows)
    return "\n".join(lines) + "\n"
