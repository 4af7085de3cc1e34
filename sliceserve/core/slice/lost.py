"""What SLICE does with admitted requests whose SLO it already counts as lost (`slice_drop_lost`, issue 21).

A candidate is lost when the selection itself marks it infeasible (`CandidateBuilder._rate`): its TTFT
passed with no token out, its TPOT could only be caught up at more than `slice_catchup_factor` x its
demand, its e2e bound passed, or it cannot go fast enough even alone. Such a request is still served as
best effort by default SLICE (SRPT order puts a half-done stream first), and recomputed after every
eviction. On the Azure conversation trace (prompts ~1,155 tokens, `paper-4060ti`, 1.2 req/s, seed 2)
that was 98 s of the 323 s the device ran: 24 non-real-time streams got their first token in time, were
displaced by real-time arrivals, then decoded best effort (mean TPOT 0.2-0.6 s against 0.1-0.25 s, up to
17 evictions each) and missed anyway; refusal at TTFT (`slice_reject_lost`) had cost 1.5 s.

Modes:
- `reject`: refuse every lost request at the rebuild (finish reason REJECTED, an SLO refusal: the server
  answers 429 `slo_infeasible`; mid-stream, the stream ends with that error): the simulator's default.
  The server's `overload: reject` uses `hopeless` (below) instead. QoServe/Niyama drop what cannot make its
  deadline under overload and SCORPIO rejects the unattainable (docs/PEERS.md); both test at the TTFT
  only, this also catches streams whose TPOT is lost.
- `relegate`: keep them, but out of the selection and of best effort while any request that can still
  make its SLO is a candidate (QoServe's relegation: served only from what the others leave). Nothing is
  refused; they hold their KV paused and are the first evicted.
- `park`: what `reject` would refuse, TTFT-lost work included, is set aside instead (`Scheduler.park`: no
  KV, out of SLICE's sight) while the device has other work, and served when it has none. The server
  turns it on with `overload: best_effort` (the default), so best effort never takes time from work that
  can still make its SLO, and the rest of the schedule is the one `reject` would run: a request `reject`
  refuses met its SLO under `best_effort` only if time nobody else needed was enough for it
  (docs/results/admission-fidelity.md). Unlike `relegate`, the parked hold no KV and are not in the
  selection's population, so they change nothing for the others.
- `hopeless`: refuse only what cannot make its SLO whatever it gets from now on, even the device to itself
  (`hopeless_reason`: its TTFT passed with no token out, or the rest of its output at l(1) per token cannot
  meet its mean TPOT or its e2e bound); park the rest of what `reject` would refuse, as `park` does, and
  refuse a parked request at the first rebuild that finds it hopeless (its client hears then, not after
  the queue timeout). The server's `overload: reject` (issue 16: refuse only what is infeasible). "Lost" is
  SLICE's own test (catching up needs more than `slice_catchup_factor` x its demand), a scheduling verdict,
  not a proof: on the live server 12 of the 26 false refusals at 1x and 14 of the 37 at 2x of run 21
  (docs/results/live-fidelity.md) were such streams, which met their SLO in the best_effort replay.
- `off`: as before.

Measured (`sliceserve simulate --policy slice`, seeds 2-4, requests meeting their SLO summed over the
sweep; docs/results/peers-issue21.md section 0): Azure trace (0.6-2, 3, 4 req/s) off 2,792, reject 2,843
(+1.8%), relegate 2,834; edge-mix (0.25-3, 6, 12) off 2,248, reject 2,308 (+2.7%), relegate 2,280. Not
kept: a stricter test (lost only if even batch-1 steps from now cannot make it: 2,837 / 2,293), and
SCORPIO's refusal at selection time of never-started requests the selection predicts to miss their TTFT
(2,795 / 2,193: the prediction is pessimistic, many of those still made it as best effort or later).
"""
from __future__ import annotations

from operator import attrgetter

from sliceserve.core.latency import LatencyModel, prefill_left_time
from sliceserve.core.slice.candidates import ttft_lost
from sliceserve.core.slice.selection import Candidate
from sliceserve.request import Request
from sliceserve.slo import FLOAT_SLACK_S


def is_lost(c: Candidate) -> bool:
    """Whether the selection counts `c`'s SLO as lost (a request without an SLO never is)."""
    return not c.feasible and not c.req.slo.is_empty


def hopeless_reason(req: Request, now: float, latency: LatencyModel, chunk: int) -> str | None:
    """Why `req` cannot meet its SLO whatever it gets from `now` on, with the numbers; None if it still can.
    Optimistic on purpose (a refusal must be sure): it runs alone from now on, each decode step at l(1) of its
    context now (the cheapest it will ever take), a prompt not yet run in chunks of `chunk` tokens
    (max_num_batched_tokens) with no queue ahead, and a stream that may stop at any token (not `ignore_eos`, or
    with stops) is given the more favourable of stopping after one more token and running to max_tokens (its
    SLO is judged on the tokens it produces; both verdicts are linear in that count). "Alone" is the device as
    profiled idle: an online factor above 1 is what iterations cost under the load of the moment, not what the
    stream would get with the device to itself (`LatencyModel.alone_scales`; priced at the loaded l(1), 26 of
    the 36 streams live run 25 refused as hopeless, most missing their mean TPOT by 1-5 %, met it in a
    replay)."""
    slo = req.slo
    if ttft_lost(req, now):
        if req.token_times_s:
            return f"TTFT: first token after {req.token_times_s[0] - req.arrival_s:.3g} s > {slo.ttft_s:g} s"
        return f"TTFT: no first token within {slo.ttft_s:g} s"
    remaining = req.remaining_output_tokens
    if remaining <= 0:
        return None
    params = req.sampling_params
    fixed = params.ignore_eos and not params.stop_token_ids and not params.stop
    counts = (remaining,) if fixed else sorted({1, remaining})
    decode_alone, prefill_alone = latency.alone_scales()
    step_s = latency.decode_time(1, req.num_tokens) * decode_alone
    started = bool(req.output_token_ids)
    if slo.tpot_s is not None and started and req.max_tokens > 1:
        t0, n_out = req.token_times_s[0], len(req.output_token_ids)
        # Mean TPOT after k more tokens, each one step apart from now on.
        best = min(counts, key=lambda k: (now + k * step_s - t0) / (n_out + k - 1))
        mean_s = (now + best * step_s - t0) / (n_out + best - 1)
        if mean_s > slo.tpot_s + FLOAT_SLACK_S:
            return (f"TPOT: {n_out + best - 1} gaps would average {mean_s * 1e3:.0f} ms even alone "
                    f"({best} more token{'s' if best > 1 else ''} at {step_s * 1e3:.1f} ms each) > "
                    f"{slo.tpot_s * 1e3:g} ms")
    elif slo.tpot_s is not None and fixed and remaining > 1 and step_s > slo.tpot_s + FLOAT_SLACK_S:
        return f"TPOT: one decode step alone takes {step_s * 1e3:.1f} ms > {slo.tpot_s * 1e3:g} ms"
    if slo.e2e_s is not None:
        k = counts[0]   # fewer tokens finish sooner
        need_s = (k if started else k - 1) * step_s
        if not started:
            need_s += prefill_left_time(latency, [req], chunk) * prefill_alone
        left_s = req.arrival_s + slo.e2e_s - now
        if need_s > left_s + FLOAT_SLACK_S:
            return (f"e2e: {k} more token{'s' if k > 1 else ''} need {need_s * 1e3:.0f} ms even alone, "
                    f"{max(left_s, 0.0) * 1e3:.0f} ms left of {slo.e2e_s:g} s")
    return None


def split_lost(cands: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """(candidates that can still make their SLO or have none, lost ones), each in the given order."""
    live: list[Candidate] = []
    lost: list[Candidate] = []
    for c in cands:
        (lost if is_lost(c) else live).append(c)
    return live, lost


class LostWork:
    """SliceScheduler's refusals of lost work (a mixin, as `ColumnFill` is for the fill): `slice_reject_lost`
    (TTFT passed with no token out) and `slice_drop_lost` (every request the selection counts as lost). Reads the
    policy's running and waiting queues, its waiting index (`_waiting`) and selection members (`_members`);
    refuses through `Scheduler.reject`, the only way a policy ends a request, or with `park` sets aside through
    `Scheduler.park`."""

    def _end_lost(self, req: Request, now: float, why: str, park: bool) -> None:
        """Refuse `req` (REJECTED with `why`), or with `park` set it aside as best effort (`Scheduler.park`)."""
        if park:
            self.park(req, now)
        else:
            self.reject(req, now, why)
            self.num_rejected += 1
        self._members.pop(req.req_id, None)

    def _reject_lost(self, now: float, lost: list[Candidate], park: bool = False) -> None:
        """Refuse every request whose TTFT has passed with no token out (`slice_reject_lost`): its SLO is
        lost whatever it gets now, and as best effort it would take time from requests that can still
        make theirs; the client hears at once (finish reason REJECTED) instead of after a queue timeout.
        `lost`: the never-run waiting ones (`WaitingIndex.lost`); the rest are looked at here."""
        ids = {c.req.req_id for c in lost}
        ids.update(r.req_id for r in (*self.running, *self._waiting.unpooled())
                   if not r.output_token_ids and ttft_lost(r, now))
        if not ids:
            return
        for req in [r for r in self.waiting + self.running if r.req_id in ids]:   # queue order, as before
            self._end_lost(req, now, f"TTFT: no first token within {req.slo.ttft_s:g} s; retry later", park)

    def _refuse_hopeless_parked(self, now: float) -> None:
        """`hopeless`: refuse each parked request the moment `hopeless_reason` names it, so that its client
        hears as soon as its SLO is certain to be missed, not after `max_queue_time_s` of silence."""
        chunk = self.config.max_num_batched_tokens
        doomed = [(r, why) for r in self.parked if (why := hopeless_reason(r, now, self.latency, chunk)) is not None]
        for req, why in doomed:
            self._end_lost(req, now, f"SLO can no longer be met ({why}); retry later", False)

    def _pooled_lost(self) -> list[Candidate]:
        """The waiting index's lost never-run members (the pool keeps its infeasible ones apart: no scan)."""
        return [c for c in self._waiting.pool.infeasible.values() if is_lost(c)]

    def _refuse_lost(self, fresh: list[Candidate], now: float, park: bool = False,
                     only_hopeless: bool = False) -> list[Candidate]:
        """`reject`: refuse every lost candidate (the built ones and the never-run ones in the waiting index),
        running ones first, then in queue order; the rest of `fresh` is what the selection walks. `park`: set
        them aside instead (`Scheduler.park`). `only_hopeless` (`hopeless`): refuse only those that
        `hopeless_reason` names; the others are parked with `park`, else they stay in `fresh` (lost)."""
        live, lost = split_lost(fresh)
        ids = {c.req.req_id for c in (*lost, *self._pooled_lost())}
        if not ids:
            return fresh
        ended, chunk = set(), self.config.max_num_batched_tokens
        for req in [r for r in (*self.running, *self.waiting) if r.req_id in ids]:
            if not only_hopeless:
                self._end_lost(req, now, "SLO can no longer be met; retry later", park)
            elif (why := hopeless_reason(req, now, self.latency, chunk)) is not None:
                self._end_lost(req, now, f"SLO can no longer be met ({why}); retry later", False)
            elif park:
                self._end_lost(req, now, "", True)
            else:
                continue
            ended.add(req.req_id)
        return live if len(ended) == len(ids) else [c for c in fresh if c.req.req_id not in ended]

    def _relegates(self, fresh: list[Candidate]) -> bool:
        """`relegate`: whether some lost candidate must step aside for a live one this rebuild."""
        n_lost = sum(map(is_lost, fresh)) + len(self._pooled_lost())
        return 0 < n_lost < len(fresh) + len(self._waiting.pool)

    def _relegated_walk(self, fresh: list[Candidate]) -> list[Candidate]:
        """`relegate` with lost candidates beside live ones: the live ones alone, in rank order. This walks the
        whole queue (not the index's lazy walk); relegation is not the default."""
        live, _ = split_lost([*fresh, *self._waiting.pool.cands])
        return sorted(live, key=attrgetter("sort_key"))
