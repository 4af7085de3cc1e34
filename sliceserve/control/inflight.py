"""The controller's look at unfinished requests: which ones are already predicted to miss their SLO.

A running request is late when its tokens so far came slower than its TPOT; a waiting one when the time it
has waited plus its predicted prefill is past its TTFT bound. Separately, the classes with a stream decoding
slower than its TPOT *now* (its last few tokens) are reported: the controller's margin reacts to those only.
"""
from __future__ import annotations

from sliceserve.core.scheduler import Scheduler
from sliceserve.request import RequestStatus

# A stream counts as decoding slower than its TPOT when its last this-many tokens came slower than it.
RECENT_TOKENS = 8


def slower_than(times: list[float], tpot_s: float | None) -> bool:
    """Whether these token times (three at least) came slower than `tpot_s` apart on average."""
    return tpot_s is not None and len(times) >= 3 and (times[-1] - times[0]) / (len(times) - 1) > tpot_s


def inflight_risk(sched: Scheduler, now: float) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """class -> (requests predicted to miss, requests with an SLO), over unfinished requests; and the classes
    with a request decoding slower than its TPOT over its recent tokens."""
    out: dict[str, list[int]] = {}
    tpot_late: set[str] = set()
    prefill = sched.latency.prefill_time
    for req in sched.requests.values():
        slo = req.slo
        # Parked best effort is counted a miss when it is parked (server/control.py), as a refusal would be.
        if slo.is_empty or req.status is RequestStatus.PARKED:
            continue
        tally = out.setdefault(req.slo_class, [0, 0])
        tally[1] += 1
        times = req.token_times_s
        if times:
            late = slower_than(times, slo.tpot_s)
            # The margin reacts to streams running slow now, not to a mean TPOT that one past stall
            # keeps above its bound for the rest of the stream (that ratcheted the margin to its maximum
            # in five cycles on a CPU server, then held it there).
            if slower_than(times[-RECENT_TOKENS - 1:], slo.tpot_s):
                tpot_late.add(req.slo_class)
        else:
            due = req.ttft_deadline_s
            late = due is not None and now + prefill(req.num_uncomputed_tokens) > due
        tally[0] += int(late)
    return {k: (v[0], v[1]) for k, v in out.items()}, tpot_late
