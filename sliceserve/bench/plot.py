"""PNG plot of a rate sweep (matplotlib, Agg backend: no display needed).

Several policies often sit on the same values (every policy at 100% attainment at low rates), so each
policy gets its own marker, line style and hollow marks: overlapping lines stay tellable apart. Attainment
gets one panel per SLO class (the focus class first), and an axis whose values span more than a decade
(completion time once a policy overloads) is drawn on a log scale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_STYLES = ("-", "--", "-.", ":")
# A positive series whose max/min exceeds this is drawn on a log axis.
LOG_RATIO = 10.0


def _classes(sweep: list[dict], policies: list[str], focus: str | None) -> list[str]:
    names = sorted({c for p in sweep for pol in policies for c in p["results"][pol].get("per_class", {})})
    if len(names) == 1:
        return []   # its panel would repeat "all"
    if focus in names:   # the class the reader cares about first
        names.remove(focus)
        names.insert(0, focus)
    return names


def _panels(classes: list[str]) -> list[tuple[str, Callable[[dict], float | None], bool]]:
    """(label, value of one policy's result, is an attainment in [0, 1])."""
    out = [("SLO attainment (all)", lambda r: r["summary"]["slo_attainment"], True)]
    for c in classes:
        out.append((f"SLO attainment ({c})",
                    lambda r, c=c: r.get("per_class", {}).get(c, {}).get("slo_attainment"), True))
    out.append(("mean completion time (s)", lambda r: r["summary"]["mean_e2e_s"], False))
    out.append(("goodput (req/s meeting SLO)", lambda r: r["summary"].get("goodput_rps"), False))
    return out


def spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v is not None and v == v and v > 0]
    return len(positive) >= 2 and max(positive) / min(positive) > LOG_RATIO


def plot_sweep(sweep: list[dict], policies: list[str], focus: str | None, path: str | Path,
               title: str = "") -> None:
    """Panels against arrival rate: attainment overall and per class, mean completion time, goodput."""
    import matplotlib.pyplot as plt

    fig = sweep_figure(sweep, policies, focus, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep_figure(sweep: list[dict], policies: list[str], focus: str | None, title: str = ""):
    """The matplotlib Figure plot_sweep saves (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p["rate"] for p in sweep]
    panels = _panels(_classes(sweep, policies, focus))
    # One row for up to three panels, else two rows of at most four.
    ncols = len(panels) if len(panels) <= 3 else min(4, -(-len(panels) // 2))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), constrained_layout=True,
                             squeeze=False)
    for ax, (label, pick, is_share) in zip(axes.flat, panels):
        every: list[float] = []
        for i, policy in enumerate(policies):
            values = [pick(p["results"][policy]) for p in sweep]
            values = [float("nan") if v is None else v for v in values]   # a gap: no sample
            every += values
            ax.plot(rates, values, marker=_MARKERS[i % len(_MARKERS)], linestyle=_STYLES[i % len(_STYLES)],
                    markerfacecolor="none", markersize=7, linewidth=1.6, label=policy)
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("arrival rate (req/s)")
        if is_share:
            ax.set_ylim(-0.03, 1.03)
        elif spans_decades(every):
            ax.set_yscale("log")
            zeros = any(v == 0 for v in every)   # a log axis cannot show them: say so
            ax.set_title(label + (", log scale (zeros not drawn)" if zeros else ", log scale"), fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(policies), 8), frameon=False)
    if title:
        fig.suptitle(title)
    return fig
