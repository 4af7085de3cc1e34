"""The scheduler knobs the controller may turn, each behind a small function that knows which policies have it.

Policies own their state; these helpers change only what a policy already re-reads on its next plan:
- SLICE margin: `cap_s` and `params.margin` (a rebuild is requested so the selection uses them).
- Per-request rate boosts: SLICE's `feedback.boost` (extra decode steps per cycle, read at the next rebuild).
- Batch cap (power target): the scheduler's `config.max_num_seqs` (and SLICE's selection limit).
A knob a policy lacks is reported as unsupported (None) rather than faked.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from sliceserve.core.scheduler import Scheduler


def has_slice_knobs(sched: Scheduler) -> bool:
    return hasattr(sched, "cap_s") and hasattr(sched, "params") and hasattr(sched, "feedback")


def get_margin(sched: Scheduler) -> float | None:
    return sched.params.margin if has_slice_knobs(sched) else None


def set_margin(sched: Any, margin: float) -> bool:
    """Set SLICE's cycle headroom; False when the policy has no such knob."""
    if not has_slice_knobs(sched):
        return False
    if not 0 <= margin < 1:
        raise ValueError(f"SLICE margin must be in [0, 1), got {margin!r}")
    sched.params = replace(sched.params, margin=margin)
    sched.cap_s = sched.params.period_s * (1.0 - margin)
    sched._dirty = True   # SLICE rebuilds its selection lazily when dirty
    return True


def boost(sched: Any, req_id: str, max_boost: int) -> bool:
    """One more decode step per cycle for `req_id` (at most `max_boost` in total); True if it changed."""
    if not has_slice_knobs(sched):
        return False
    current = sched.feedback.boost.get(req_id, 0)
    if current >= max_boost:
        return False
    sched.feedback.boost[req_id] = current + 1
    sched._dirty = True
    return True


def get_batch_cap(sched: Scheduler) -> int:
    return sched.config.max_num_seqs


def set_batch_cap(sched: Any, max_num_seqs: int) -> None:
    """Cap the number of sequences per iteration (the power knob). The config stays frozen: a new one
    replaces it, validated like any other."""
    sched.config = sched.config.with_overrides(max_num_seqs=max_num_seqs)
    if has_slice_knobs(sched):
        sched.params = replace(sched.params, max_num_seqs=max_num_seqs)
        sched._dirty = True
