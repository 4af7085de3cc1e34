"""SLO admission control, run on the engine thread just before a request joins the scheduler.

Three answers besides "admit":
- invalid (400): the SLO cannot be met even on an idle device: the latency model's prefill of the whole
  prompt exceeds the TTFT bound, or one decode step alone, l(1, ctx), exceeds the TPOT bound.
- overloaded (429 + Retry-After, or with `overload: best_effort` admitted as best effort: parked, see
  `Scheduler.park`, and served when the device has nothing else to do): under the current load the
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
    refuses what is hopeless, what cannot make its SLO even with the device to itself (SLICE's
    `slice_reject_lost` and `slice_drop_lost = hopeless`, an SLO refusal the client hears at once, naming the
    numbers), and parks what SLICE merely counts as lost; with `best_effort` nothing admitted is refused:
    SLICE parks it all (`slice_drop_lost = park`). Parked work is served when the device has nothing else to
    do. The server and the offline benchmarks that stand in for it (benchmarks/admission_fidelity.py) build
    the scheduler with these."""
    refuse = overload == "reject"
    return {"slice_reject_lost": refuse, "slice_drop_lost": "hopeless" if refuse else "park"}


def predicted_miss(req: Request, est: LoadEstimate, waited: float) -> str | None:
    """Which bound the estimate under load says `req` misses, with the numbers and the prediction's parts;
    None if it meets them all."""
    slo = req.slo
    if slo.ttft_s is not None and waited + est.ttft_s > slo.ttft_s:
        return f"predicted ttft {(waited + est.ttft_s) * 1e3:.0f} ms > {slo.ttft_s * 1e3:g} ms ({est.why})"
    if slo.tpot_s is not None and est.tpot_s > slo.tpot_s:
        return f"predicted tpot {est.tpot_s * 1e3:.0f} ms > {slo.tpot_s * 1e3:g} ms ({est.tpot_why})"
    return None


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
        miss = None if req.slo.is_empty else predicted_miss(req, est, waited)
        if miss is None:
            return None
        if overload != "reject":   # best effort: admitted, but set aside until the device has time to spare
            req.park_on_arrival = True
            return None
        return Rejection("overloaded", f"{SLO_REFUSAL}: {miss}", retry_after_s=max(1.0, est.drain_s))

    return admit
