"""Rate sweeps: every policy at every arrival rate, on identical arrivals per rate."""
from __future__ import annotations

import math
from typing import Callable

from sliceserve.bench.compare import SimSettings, run_policies
from sliceserve.bench.progress import progress as progress_bar
from sliceserve.metrics import max_rate_meeting
from sliceserve.workload import Workload


def parse_rate_range(text: str) -> list[float]:
    """'1:12:1' -> [1, 2, ..., 12] (STOP included when the steps land on it)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"cannot read rate range {text!r}; write START:STOP:STEP, e.g. 1:12:1")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"rate range {text!r} must hold three numbers, START:STOP:STEP") from None
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise ValueError(f"rate range {text!r} must hold finite numbers")
    if start <= 0 or step <= 0 or stop < start:
        raise ValueError(f"rate range {text!r} needs 0 < START <= STOP and STEP > 0")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > 1000:
        raise ValueError(f"rate range {text!r} gives {count} rates; use a larger STEP (at most 1000 rates)")
    # Rounding keeps 0.1-steps from printing as 0.30000000000000004 in reports and JSON.
    return [round(start + i * step, 9) for i in range(count)]


def run_sweep(policies: list[str], rates: list[float], make_workload: Callable[[float], Workload],
              settings: SimSettings, progress: bool = True) -> list[dict]:
    """[{"rate": r, "results": {POLICY: {...}}}] in rate order. `make_workload(rate)` must be deterministic,
    so every policy at one rate sees the same arrivals."""
    bar = progress_bar(len(rates) * len(policies), "simulate", "runs", enabled=progress)
    sweep: list[dict] = []
    with bar:
        for rate in rates:
            bar.set_postfix_str(f"rate={rate:g}")
            workload = make_workload(rate)
            results = run_policies(policies, workload, settings, on_done=lambda _p: bar.update(1))
            sweep.append({"rate": rate, "num_requests": len(workload.specs), "results": results})
    return sweep


def distserve_goodput(sweep: list[dict], policy: str, slo_class: str | None = None) -> float | None:
    """Highest swept rate at which `policy` keeps attainment >= 90% (overall, or within one class)."""
    rates, atts = [], []
    for point in sweep:
        res = point["results"][policy]
        summary = res["summary"] if slo_class is None else res["per_class"].get(slo_class, {})
        rates.append(point["rate"])
        atts.append(summary.get("slo_attainment"))
    return max_rate_meeting(rates, atts)
