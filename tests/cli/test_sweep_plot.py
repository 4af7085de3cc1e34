"""Sweep plots keep overlapping policies apart (own marker and line style), give each SLO class its own
attainment panel, and put series spanning more than a decade on a log axis."""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from sliceserve.bench.plot import spans_decades, sweep_figure  # noqa: E402


def _point(rate: float, att: dict[str, float], e2e: float, goodput: float) -> dict:
    return {"summary": {"slo_attainment": sum(att.values()) / len(att), "mean_e2e_s": e2e, "goodput_rps": goodput},
            "per_class": {c: {"slo_attainment": v} for c, v in att.items()}}


def _sweep() -> list[dict]:
    # Both policies identical at rate 1 (the overlap the markers must survive); completion time spans 0.5-80 s.
    return [{"rate": r, "results": {"slice": _point(r, {"realtime": 1.0, "batch": 1.0 / r}, 0.5 * r, 2.0),
                                    "vllm": _point(r, {"realtime": 1.0 / r ** 2, "batch": 1.0 / r}, 0.5 * r ** 3,
                                                   1.0 / r)}}
            for r in (1.0, 2.0, 4.0, 5.4)]


def test_panels_markers_and_log_axes() -> None:
    import matplotlib.pyplot as plt

    fig = sweep_figure(_sweep(), ["slice", "vllm"], "realtime")
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        titles = [ax.get_title() for ax in axes]
        assert titles[:3] == ["SLO attainment (all)", "SLO attainment (realtime)", "SLO attainment (batch)"]
        time_ax = next(ax for ax in axes if ax.get_title().startswith("mean completion time"))
        assert time_ax.get_yscale() == "log" and "log scale" in time_ax.get_title()
        assert all(ax.get_yscale() == "linear" for ax in axes[:3])
        for ax in axes:
            markers = {line.get_marker() for line in ax.get_lines()}
            styles = {line.get_linestyle() for line in ax.get_lines()}
            assert len(markers) == 2 and len(styles) == 2, ax.get_title()
    finally:
        plt.close(fig)


def test_one_class_has_no_duplicate_panel_and_narrow_ranges_stay_linear() -> None:
    import matplotlib.pyplot as plt

    sweep = [{"rate": r, "results": {"vllm": _point(r, {"test": 1.0}, 1.0 + r, 1.0)}} for r in (1.0, 2.0)]
    fig = sweep_figure(sweep, ["vllm"], "test")
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in axes] == ["SLO attainment (all)", "mean completion time (s)",
                                                   "goodput (req/s meeting SLO)"]
        assert all(ax.get_yscale() == "linear" for ax in axes)
    finally:
        plt.close(fig)
    assert spans_decades([0.5, 80.0]) and not spans_decades([1.0, 9.0]) and not spans_decades([0.0, 5.0])
