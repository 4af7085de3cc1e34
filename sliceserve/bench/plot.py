"""PNG plot of a rate sweep (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def plot_sweep(sweep: list[dict], policies: list[str], focus: str | None, path: str | Path,
               title: str = "") -> None:
    """Three panels against arrival rate: overall attainment, the focus class's attainment, mean completion time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p["rate"] for p in sweep]

    def series(policy: str, pick) -> list[float]:
        # matplotlib draws None as a gap, which is right for "no sample".
        return [pick(p["results"][policy]) for p in sweep]

    panels = [
        ("SLO attainment (all)", lambda r: r["summary"]["slo_attainment"], (0, 1.05)),
        (f"SLO attainment ({focus})" if focus else "SLO attainment",
         lambda r: (r["per_class"].get(focus, {}) if focus else r["summary"]).get("slo_attainment"), (0, 1.05)),
        ("mean completion time (s)", lambda r: r["summary"]["mean_e2e_s"], None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), constrained_layout=True)
    for ax, (label, pick, ylim) in zip(axes, panels):
        for policy in policies:
            values = [float("nan") if v is None else v for v in series(policy, pick)]
            ax.plot(rates, values, marker="o", label=policy)
        ax.set_xlabel("arrival rate (req/s)")
        ax.set_ylabel(label)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
