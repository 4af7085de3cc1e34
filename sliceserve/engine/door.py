"""The waiting queue's two rules beyond the admit hook, shared by `AsyncEngine` (the server) and `Simulator`, so a
simulated server turns work away as the live one does (benchmarks/admission_fidelity.py stands in for it):

- displacement: a full queue refuses its least valuable unstarted request instead of a newcomer worth more,
  if the newcomer would be admitted in its place. Without it a flood of low-utility work (an embedding burst)
  fills the queue and the real-time class is refused at the door, however the policy would have ranked it.
- the queue's time limit (`max_queue_time_s`): a request still without its first token after that long, or
  after its own TTFT bound where that is longer, is refused; so is a stream parked as best effort after its
  first token (`Scheduler.park`) that waited that long since. Under sustained overload a policy that serves by
  utility (SLICE) may never reach low-value work, and a client must get an answer rather than wait forever.
  Not a parked stream with a TPOT or e2e bound under a policy that refuses parked work once it is hopeless
  (`Scheduler.ends_parked_when_hopeless`, the server's `overload: reject`): waiting makes such a stream
  hopeless in bounded time, and then it hears why; before that its SLO can still be met, and a refusal at
  60 s would turn away a request that could still make it (2 of the 3 such refusals of live run 24 met their
  SLO in the best_effort replay).

Each function ends requests through the scheduler and returns them; the driver tells their streams and its
observer.
"""
from __future__ import annotations

from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.hooks import AdmitFn, Rejection
from sliceserve.request import FinishReason, Request


def admit_or_displace(sched: Scheduler, admit: AdmitFn | None, req: Request,
                      now: float) -> tuple[Rejection | None, Request | None]:
    """The admit hook's verdict on `req` (None: admitted), and the request displaced to make room for it, ended
    REJECTED (None if there was none)."""
    verdict = admit(sched, req, now) if admit is not None else None
    if verdict is None or verdict.kind != "queue_full":
        return verdict, None
    victims = [r for r in sched.waiting if r.utility < req.utility and r.num_output_tokens == 0]
    if not victims:
        return verdict, None
    victim = min(victims, key=lambda r: (r.utility, -r.arrival_s))   # the newest of the least valuable
    with sched.waiting_without(victim):   # ask the admit hook as if its place were free
        verdict = admit(sched, req, now)
    if verdict is not None:   # `req` gets its own answer and the victim stays
        return verdict, None
    done = sched.abort(victim.req_id, now, FinishReason.REJECTED,
                       error=f"displaced from the full waiting queue by a request of higher utility "
                             f"({req.utility:g} > {victim.utility:g}); retry later")
    return None, done


def late_requests(sched: Scheduler, now: float, max_queue_time_s: float) -> list[tuple[Request, float]]:
    """Every request still without its first token past its limit: `max_queue_time_s`, or its own TTFT bound
    where that is longer (a client that asked for its first token within 97 s, edge-mix's nrt-250 under the SLO
    scale of a llama.cpp CPU server, is not cut off at 60 s while its SLO can still be met; once that bound has
    passed, the policy's own refusal or this limit ends it). Waiting ones, and those prefilled and then left
    paused (SLICE may prefill a best-effort request and never find time to decode it). Pairs of (request,
    its limit)."""
    late = []
    for r in sched.requests.values():   # past the plain limit first: one comparison a request on every pass
        if r.num_output_tokens == 0 and now - r.arrival_s > max_queue_time_s:
            limit = max(max_queue_time_s, r.slo.ttft_s or 0.0)
            if now - r.arrival_s > limit:
                late.append((r, limit))
    waits_for_hopeless = sched.ends_parked_when_hopeless
    for r in sched.parked:   # a stream parked after its first token: the limit counts from its parking
        if waits_for_hopeless and (r.slo.tpot_s is not None or r.slo.e2e_s is not None):
            continue
        if r.num_output_tokens and now - r.parked_s > max_queue_time_s:
            late.append((r, max_queue_time_s))
    return late


def end_late(sched: Scheduler, late: list[tuple[Request, float]], max_queue_time_s: float,
             now: float) -> list[Request]:
    """Refuse each request `late_requests` found (REJECTED, saying which limit passed; aborting frees its KV
    too); returns the ones ended."""
    ended = []
    for r, limit in late:
        if r.num_output_tokens:
            why = (f"set aside as best effort once its SLO was lost, and no time freed up within max_queue_time "
                   f"{max_queue_time_s:g} s: the server is overloaded; retry later")
        else:
            within = (f"max_queue_time {limit:g} s" if limit == max_queue_time_s else
                      f"its TTFT bound of {limit:g} s (longer than max_queue_time {max_queue_time_s:g} s)")
            why = (f"no first token within {within}: the server is overloaded and serves higher-value requests "
                   "first; retry later")
        req = sched.abort(r.req_id, now, FinishReason.REJECTED, error=why)
        if req is not None:
            ended.append(req)
    return ended
