"""SLO admission control, run on the engine thread just before a request joins the scheduler.

Three answers besides "admit":
- invalid (400): the SLO cannot be met even on an idle device: the latency model's prefill of the whole
  prompt exceeds the TTFT bound, or one decode step alone, l(1, ctx), exceeds the TPOT bound.
- overloaded (429 + Retry-After, or admitted as best effort, by setting): under the current load the
  predicted TTFT or TPOT misses the bound (`sliceserve.core.feasibility`: the work ahead of it in the running
  policy's own order, and for a policy that paces decodes to each TPOT, SLICE, the share of the device the
  paced streams ahead take; the refusal names the prediction's parts).
- queue_full (503): the bounded waiting queue is full.
The point here is to refuse what is hopeless, not to schedule. The estimate lives in core/ (pure, time passed
in) so that the simulator's tests and benchmarks/admission_fidelity.py measure the same code the server runs.
"""
from __future__ import annotations

from sliceserve.core.feasibility import LoadEstimate, drain_estimate, estimate_under_load, idle_infeasibility
from sliceserve.core.scheduler import SLO_REFUSAL, Scheduler
from sliceserve.engine.async_engine import Rejection
from sliceserve.request import Request

__all__ = ["LoadEstimate", "drain_estimate", "estimate_under_load", "idle_infeasibility", "lost_work_config",
           "make_admit"]


def lost_work_config(overload: str) -> dict[str, object]:
    """What the policy does with admitted work whose SLO is lost, by the `overload` setting: with `reject` it
    refuses it (SLICE's `slice_reject_lost` and `slice_drop_lost`, an SLO refusal the client hears at once);
    with `best_effort` nothing admitted is refused, so both are off. The server and the offline benchmarks that
    stand in for it (benchmarks/admission_fidelity.py) build the scheduler with these."""
    refuse = overload == "reject"
    return {"slice_reject_lost": refuse, "slice_drop_lost": "reject" if refuse else "off"}


def make_admit(max_waiting: int, overload: str):
    """The admit hook for AsyncEngine: (scheduler, request, now) -> Rejection | None."""

    def admit(sched: Scheduler, req: Request, now: float) -> Rejection | None:
        if len(sched.waiting) >= max_waiting:
            return Rejection("queue_full", f"waiting queue is full ({max_waiting} requests); retry later",
                             retry_after_s=max(1.0, drain_estimate(sched)))
        reason = sched.admission_error(req) or idle_infeasibility(sched, req)
        if reason is not None:
            return Rejection("invalid", reason)
        est = estimate_under_load(sched, req, now)
        waited = now - req.arrival_s
        req.predicted_ttft_s, req.predicted_tpot_s = waited + est.ttft_s, est.tpot_s
        if overload != "reject" or req.slo.is_empty:
            return None
        if req.slo.ttft_s is not None and waited + est.ttft_s > req.slo.ttft_s:
            return Rejection("overloaded", f"{SLO_REFUSAL}: predicted ttft "
                             f"{(waited + est.ttft_s) * 1e3:.0f} ms > {req.slo.ttft_s * 1e3:g} ms ({est.why})",
                             retry_after_s=max(1.0, est.drain_s))
        if req.slo.tpot_s is not None and est.tpot_s > req.slo.tpot_s:
            return Rejection("overloaded", f"{SLO_REFUSAL}: predicted tpot "
                             f"{est.tpot_s * 1e3:.0f} ms > {req.slo.tpot_s * 1e3:g} ms ({est.tpot_why})",
                             retry_after_s=max(1.0, est.drain_s))
        return None

    return admit
