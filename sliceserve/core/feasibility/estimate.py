"""Whether a request's SLO is feasible at its arrival: the estimate behind admission (server/admission.py) and
the Retry-After hints, on the scheduler's own calibrated latency model (the one `/ready` reports). Pure: the scheduler's state and the latency model in, seconds out; time
is passed in where it matters, never read.

- `idle_infeasibility`: the SLO cannot be met even on an idle device.
- `estimate_under_load`: the TTFT and TPOT the request would get under the current load, in the running
  policy's own order (`queued_ahead`).
- `drain_estimate`: seconds to work off everything admitted now.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from sliceserve.core.latency import LatencyModel, prefill_left_time
from sliceserve.core.feasibility.paced import PacedRow, paced_first_token, paced_load
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Scheduler
from sliceserve.request import Request, RequestStatus


def idle_infeasibility(sched: Scheduler, req: Request) -> str | None:
    """Why `req`'s SLO can't be met on an idle device, or None."""
    lat, slo = sched.latency, req.slo
    chunk = sched.config.max_num_batched_tokens
    decode_idle, prefill_idle = lat.alone_scales()   # an idle device: not the online factors' load
    if slo.ttft_s is not None:
        prefill = prefill_left_time(lat, [req], chunk) * prefill_idle
        if prefill > slo.ttft_s:
            return (f"SLO cannot be met even on an idle device: prefilling {req.num_prompt_tokens} prompt tokens "
                    f"takes ~{prefill * 1e3:.1f} ms > ttft {slo.ttft_s * 1e3:g} ms")
    if slo.e2e_s is not None:
        prefill = prefill_left_time(lat, [req], chunk) * prefill_idle
        if prefill > slo.e2e_s:     # the first token alone comes after the whole prefill
            return (f"SLO cannot be met even on an idle device: prefilling {req.num_prompt_tokens} prompt tokens "
                    f"takes ~{prefill * 1e3:.1f} ms > e2e {slo.e2e_s * 1e3:g} ms")
    if slo.tpot_s is not None:
        step = lat.decode_time(1, req.num_prompt_tokens) * decode_idle
        if step > slo.tpot_s:
            return (f"SLO cannot be met even on an idle device: one decode step takes ~{step * 1e3:.1f} ms "
                    f"> tpot {slo.tpot_s * 1e3:g} ms")
    return None


@dataclass(frozen=True, slots=True)
class LoadEstimate:
    ttft_s: float
    tpot_s: float
    drain_s: float     # time to work off what is queued now: the Retry-After hint
    why: str = ""      # the TTFT prediction's parts, for the refusal message
    tpot_why: str = ""   # the TPOT prediction's parts


def queued_ahead(sched: Scheduler, req: Request) -> Callable[[Request], bool]:
    """Whether an admitted request would be served before `req` in the running policy's own order: the
    policy's `admission_key` where it declares one (SLICE: its selection sort key from the request alone);
    else, for a policy that declares `orders_by_utility` (core/policies/interface.py), work of at least the
    newcomer's utility; else (FCFS and friends) everything admitted."""
    if not isinstance(sched, Policy):
        return lambda r: True
    mine = sched.admission_key(req)
    if mine is not None:
        return lambda r: sched.admission_key(r) < mine
    if sched.orders_by_utility:
        return lambda r: r.utility >= req.utility
    return lambda r: True


def _paced_rows(running: list[Request], queued: list[Request], queued_prefill_s: float) -> list[PacedRow]:
    """The rows ahead of a newcomer under a pacing policy: each running one until its remaining tokens are
    out at its pace; each queued one from now (it is selected first) until its prefill and tokens are out.
    Requests without a TPOT bound are paced by nobody: they take only the time left over."""
    rows = [PacedRow(r.slo.tpot_s, float(r.num_tokens), r.remaining_output_tokens * r.slo.tpot_s)
            for r in running if r.slo.tpot_s is not None and r.status is RequestStatus.RUNNING]
    rows += [PacedRow(r.slo.tpot_s, float(r.num_tokens), queued_prefill_s + r.remaining_output_tokens * r.slo.tpot_s)
             for r in queued if r.slo.tpot_s is not None]
    return rows


def _paced(sched: Scheduler, req: Request, running: list[Request], queued: list[Request],
           prefill_tokens: int, prefill: float) -> tuple[float, float, str]:
    """(ttft, tpot, why) under a policy that paces decodes (`paced.py`): `prefill` seconds of prompt work
    (`prefill_tokens` tokens, its own included) before its first token."""
    lat = sched.latency
    ahead = _paced_rows(running, queued, prefill)
    tpot = req.slo.tpot_s if req.slo.tpot_s is not None else math.inf
    me = PacedRow(tpot, float(req.num_prompt_tokens), math.inf)
    wait = paced_first_token(lat, ahead, me, prefill)
    why = (f"{prefill_tokens - req.num_prompt_tokens} prompt tokens queued ahead + its own {req.num_prompt_tokens}: "
           f"prefill {prefill * 1e3:.0f} ms of device time, in what {len(ahead)} paced streams ahead leave "
           f"(they take {paced_load(lat, ahead):.0%} of it now)"
           + (f", after {wait.slot_s * 1e3:.0f} ms for a place in the pacing" if wait.slot_s > 0 else ""))
    tpot_s = tpot * wait.load if req.slo.tpot_s is not None else lat.decode_time(len(running) + 1)
    return wait.first_token_s, tpot_s, why


def slo_lost(req: Request, now: float) -> bool:
    """Whether `req`'s TTFT is lost: no token yet and its bound has passed, or its first token came late."""
    if req.slo.ttft_s is None:
        return False
    if req.token_times_s:
        return req.token_times_s[0] > req.ttft_deadline_s
    return now > req.ttft_deadline_s


def estimate_under_load(sched: Scheduler, req: Request, now: float | None = None) -> LoadEstimate:
    """The TTFT (seconds from `now`) and TPOT `req` would get if admitted now. A pacing policy serves for
    SLOs: work whose TTFT is already lost rides best effort behind every feasible request (SLICE), so given
    `now` it is not counted ahead there."""
    lat = sched.latency
    ahead = queued_ahead(sched, req)
    paced = isinstance(sched, Policy) and sched.paces_decodes
    if paced and now is not None:
        order = ahead
        ahead = lambda r: not slo_lost(r, now) and order(r)  # noqa: E731
    queued = [r for r in sched.waiting if ahead(r)]
    running = [r for r in sched.running if ahead(r)]
    # Prompt left to compute ahead of it: queued prompts and those of running requests still prefilling.
    prefilling = [*queued, *(r for r in running if not r.output_token_ids)]
    queued_prefill = sum(r.num_uncomputed_tokens for r in prefilling)
    k = len(running) + 1
    ctx = (sum(r.num_tokens for r in running) + req.num_prompt_tokens) / k
    step = lat.decode_time(k, ctx)
    chunk = sched.config.max_num_batched_tokens
    ahead_s = prefill_left_time(lat, prefilling, chunk)
    prefill = prefill_left_time(lat, [*prefilling, req], chunk)
    drain = ahead_s + step * max((r.remaining_output_tokens for r in running), default=0)
    head = f"{len(queued)} of {len(sched.waiting)} queued requests ahead in {sched.name}'s order, "
    if paced:
        ttft, tpot, why = _paced(sched, req, running, queued, queued_prefill + req.num_prompt_tokens, prefill)
        return LoadEstimate(ttft, tpot, drain, head + why, "its pace beside the streams ahead of it")
    # Prefill chunks share iterations with decodes: count one decode step per chunk of queued prompt.
    chunks = math.ceil((queued_prefill + req.num_prompt_tokens) / chunk)
    beside = chunks * lat.decode_time(len(running), ctx)
    why = (f"{queued_prefill} prompt tokens queued ahead + its own {req.num_prompt_tokens}: prefill "
           f"{prefill * 1e3:.0f} ms, plus {chunks} decode step(s) of {len(running)} running beside them "
           f"{beside * 1e3:.0f} ms")
    return LoadEstimate(prefill + beside, step, drain, head + why, f"a decode step of {k} requests")


def drain_estimate(sched: Scheduler) -> float:
    """Seconds to work off everything admitted now (prefill of the queued prompts, then every remaining
    output token in batches of up to max_num_seqs): the Retry-After of a full queue or a queue timeout."""
    lat = sched.latency
    reqs = list(sched.running) + list(sched.waiting)
    if not reqs:
        return 0.0
    batch = max(1, min(sched.config.max_num_seqs, len(reqs)))
    ctx = sum(r.num_tokens for r in reqs) / len(reqs)
    tokens = sum(r.remaining_output_tokens for r in reqs)
    return (prefill_left_time(lat, sched.waiting, sched.config.max_num_batched_tokens)
            + lat.decode_time(batch, ctx) * math.ceil(tokens / batch))
