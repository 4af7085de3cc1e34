"""Serving under a policy that paces decodes to each request's TPOT (SLICE's decode mask): how much of the
device the decoding rows take, and when a newcomer's first token comes in what they leave.

A paced row i decodes 1/tpot_i times a second whatever else runs, and a decode step runs every row due in
it; with rates sorted r_1 >= r_2 >= ..., steps of k rows come r_k - r_{k+1} times a second, so decoding
takes sum_k (r_k - r_{k+1}) l(k) seconds per second (the SLICE paper's cycle time, over a cycle of one
second) plus each row's context term. Prefill runs in the rest: a prompt of W seconds of prefill waits
W / (1 - load) while the rows ahead of it keep their rates, and the load falls as they finish. A newcomer
joins the pacing only when its own rate fits beside the rows ahead of it (the policy's cycle-time test);
until then it waits, which is what the TPOT of a paced request turns into: a wait before its first token,
not a slower stream.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from sliceserve.core.latency import LatencyModel


@dataclass(frozen=True, slots=True)
class PacedRow:
    tpot_s: float      # its pace: one decode step per tpot_s
    ctx: float         # its context, tokens
    finish_s: float    # seconds from now until it has no token left to decode


def paced_load(lat: LatencyModel, rows: list[PacedRow]) -> float:
    """Seconds of device time per second that decoding `rows` at their own paces takes (above 1: they
    cannot all keep their pace). Rows of one pace are counted together: within a group r_k - r_(k+1) = 0, so
    only a group's last row adds a step size, and a handful of SLO classes cost a handful of l(k) lookups."""
    if not rows:
        return 0.0
    per_pace = Counter(r.tpot_s for r in rows)
    paces = sorted(per_pace)          # shortest TPOT first: the highest rate
    ctx_ref = sum(r.ctx for r in rows) / len(rows)
    load, k = 0.0, 0
    for i, tpot in enumerate(paces):
        k += per_pace[tpot]
        slower = 1.0 / paces[i + 1] if i + 1 < len(paces) else 0.0
        load += (1.0 / tpot - slower) * lat.column_time(k, ctx_ref)
    return load + lat.row_ctx_coef_s * sum(r.ctx / r.tpot_s for r in rows)


@dataclass(frozen=True, slots=True)
class PacedWait:
    slot_s: float       # until its own pace fits beside the rows ahead (0: at once)
    first_token_s: float   # until its first token: the slot, then the prefill in what the rows leave
    load: float         # the rows ahead and itself once it joins, device seconds per second


def paced_first_token(lat: LatencyModel, ahead: list[PacedRow], me: PacedRow, prefill_s: float,
                      cap: float = 1.0) -> PacedWait:
    """When `me` gets its first token: first the moment its pace fits beside the rows `ahead` still
    decoding (`cap`: the share of the device the policy lets paced rows take), then `prefill_s` seconds of
    prefill (its own and what is queued ahead of it) in the share those rows leave, which grows as they
    finish. Rows are walked in finish order: O(n^2 log n) for n rows ahead (n <= a few dozen)."""
    alive = sorted(ahead, key=lambda r: r.finish_s)
    t, i = 0.0, 0
    while i < len(alive) and paced_load(lat, alive[i:] + [me]) > cap:
        t = max(t, alive[i].finish_s)
        i += 1
    slot = t
    left = prefill_s
    while True:
        spare = cap - paced_load(lat, alive[i:])
        end = alive[i].finish_s if i < len(alive) else math.inf
        if spare > 0 and t + left / spare <= end:
            t += left / spare
            break
        left -= max(0.0, spare) * (end - t)
        t, i = end, i + 1
    load = paced_load(lat, [r for r in alive if r.finish_s > t] + [me])
    return PacedWait(slot, t, load)
