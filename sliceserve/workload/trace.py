"""Replay of the Azure LLM inference trace format (CSV header TIMESTAMP,ContextTokens,GeneratedTokens).

Arrival times are relative to the first row. TIMESTAMP may be an ISO date-time (as in the Azure 2023
release, e.g. `2023-11-16 18:15:46.6805900`) or a number of seconds. The trace has no SLO classes: they
are drawn by a seeded mix.
"""
from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path
from typing import Mapping

import numpy as np

from sliceserve.slo import SLOClass
from sliceserve.workload.presets import choose_classes
from sliceserve.workload.spec import RequestSpec, Workload

HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_EPOCH = datetime(1970, 1, 1)


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    text = text.strip()
    # Python 3.11 reads at most 6 fractional digits reliably; the Azure files carry 7 (100 ns ticks).
    head, dot, frac = text.partition(".")
    if dot and len(frac) > 6 and frac.isdigit():
        text = f"{head}.{frac[:6]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        return moment.timestamp()
    # Naive times: count from a fixed epoch, not via the local time zone (DST would shift gaps).
    return (moment - _EPOCH).total_seconds()


def read_trace_rows(path: str | Path) -> list[tuple[float, int, int]]:
    """(seconds since the first row, prompt tokens, output tokens) per row, sorted by time.

    A malformed line raises ValueError naming the file and the line number."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file not found: {path}")
    rows: list[tuple[float, int, int]] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ValueError(f"{path}:1: expected header {','.join(HEADER)}, got {','.join(header or [])!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{line}: expected 3 fields (TIMESTAMP,ContextTokens,GeneratedTokens), "
                                 f"got {len(row)}")
            try:
                t, prompt, output = _timestamp(row[0]), int(row[1]), int(row[2])
            except ValueError:
                raise ValueError(f"{path}:{line}: cannot read {','.join(row)!r}; expected a timestamp and two "
                                 "integers") from None
            if not math.isfinite(t) or prompt < 1 or output < 0:
                raise ValueError(f"{path}:{line}: token counts must be ContextTokens >= 1 and GeneratedTokens >= 0")
            rows.append((t, prompt, output))
    if not rows:
        raise ValueError(f"trace file {path} has no requests")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    return [(t - t0, p, o) for t, p, o in rows]


def load_trace(path: str | Path, classes: Mapping[str, SLOClass], weights: Mapping[str, float], seed: int,
               request_rate: float | None = None, duration_s: float | None = None) -> Workload:
    """A workload replaying `path`.

    request_rate: rescale time so the whole trace's mean rate becomes this (requests/s); None keeps it.
    duration_s:   keep only arrivals before this time (after rescaling).
    Zero-token outputs become 1 (the simulator always generates at least one token).
    """
    rows = read_trace_rows(path)
    if request_rate is not None:
        if not (math.isfinite(request_rate) and request_rate > 0):
            raise ValueError(f"request rate must be a positive number of requests/s, got {request_rate!r}")
        span = rows[-1][0]
        if len(rows) < 2 or span <= 0:
            raise ValueError(f"trace {path} spans no time; it cannot be rescaled to a request rate")
        natural_rate = (len(rows) - 1) / span
        factor = natural_rate / request_rate
        rows = [(t * factor, p, o) for t, p, o in rows]
    if duration_s is not None:
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration must be a positive number of seconds, got {duration_s!r}")
        rows = [r for r in rows if r[0] < duration_s]
    names = [n for n in weights if n in classes]
    missing = sorted(set(weights) - set(classes))
    if missing:
        raise ValueError(f"trace mix names unknown SLO class(es) {', '.join(missing)}; known: {', '.join(sorted(classes))}")
    chosen = choose_classes(names, [weights[n] for n in names], len(rows), np.random.default_rng(seed))
    specs = tuple(RequestSpec(t, p, max(1, o), c) for (t, p, o), c in zip(rows, chosen))
    used = {n: classes[n] for n in names if weights[n] > 0}
    return Workload(f"trace:{Path(path).name}", specs, used)
