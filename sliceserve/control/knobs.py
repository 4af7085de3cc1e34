"""The scheduler knobs the controller turns, as the policy declares them (`Policy.knobs`,
sliceserve.core.policies.interface): no policy is known here by name or by its attributes.

- Cycle margin ("margin"): SLICE's share of the cycle left spare.
- Per-request rate boost ("rate_boost"): extra decode steps per cycle for a lagging request.
- Batch cap ("max_num_seqs", every policy): sequences per iteration (the power knob).
A knob a policy lacks is reported as unsupported (None / False) rather than faked.
"""
from __future__ import annotations

from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Scheduler


def _with(sched: Scheduler, name: str) -> Policy | None:
    """`sched` if it is a policy that declares knob `name`, else None."""
    return sched if isinstance(sched, Policy) and sched.knob(name) is not None else None


def get_margin(sched: Scheduler) -> float | None:
    policy = _with(sched, "margin")
    return policy.get_knob("margin") if policy is not None else None


def set_margin(sched: Scheduler, margin: float) -> bool:
    """Set the policy's cycle margin; False when it has no such knob (ValueError outside its bounds)."""
    policy = _with(sched, "margin")
    if policy is None:
        return False
    policy.set_knob("margin", margin)
    return True


def boost(sched: Scheduler, req_id: str, max_boost: int) -> bool:
    """One more decode step per cycle for `req_id` (at most `max_boost` in total); True if it changed."""
    policy = _with(sched, "rate_boost")
    if policy is None:
        return False
    current = policy.get_knob("rate_boost", req_id)
    if current >= max_boost:
        return False
    policy.set_knob("rate_boost", current + 1, req_id)
    return True


def get_batch_cap(sched: Scheduler) -> int:
    return sched.config.max_num_seqs


def set_batch_cap(sched: Scheduler, max_num_seqs: int) -> None:
    """Cap the number of sequences per iteration (the power knob; every policy declares it)."""
    policy = _with(sched, "max_num_seqs")
    if policy is not None:
        policy.set_knob("max_num_seqs", max_num_seqs)
    else:
        sched.config = sched.config.with_overrides(max_num_seqs=max_num_seqs)
