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
  answers 429 `slo_infeasible`; mid-stream, the stream ends with that error). The server turns it on
  only with `overload: reject`, as for `slice_reject_lost`. QoServe/Niyama drop what cannot make its
  deadline under overload and SCORPIO rejects the unattainable (docs/PEERS.md); both test at the TTFT
  only, this also catches streams whose TPOT is lost.
- `relegate`: keep them, but out of the selection and of best effort while any request that can still
  make its SLO is a candidate (QoServe's relegation: served only from what the others leave). Nothing is
  refused; they hold their KV paused and are the first evicted.
- `off`: as before.

Measured (`sliceserve simulate --policy slice`, seeds 2-4, requests meeting their SLO summed over the
sweep; docs/results/peers-issue21.md section 0): Azure trace (0.6-2, 3, 4 req/s) off 2,792, reject 2,843
(+1.8%), relegate 2,834; edge-mix (0.25-3, 6, 12) off 2,248, reject 2,308 (+2.7%), relegate 2,280. Not
kept: a stricter test (lost only if even batch-1 steps from now cannot make it: 2,837 / 2,293), and
SCORPIO's refusal at selection time of never-started requests the selection predicts to miss their TTFT
(2,795 / 2,193: the prediction is pessimistic, many of those still made it as best effort or later).
"""
from __future__ import annotations

from sliceserve.core.slice.selection import Candidate


def is_lost(c: Candidate) -> bool:
    """Whether the selection counts `c`'s SLO as lost (a request without an SLO never is)."""
    return not c.feasible and not c.req.slo.is_empty


def split_lost(cands: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """(candidates that can still make their SLO or have none, lost ones), each in the given order."""
    live: list[Candidate] = []
    lost: list[Candidate] = []
    for c in cands:
        (lost if is_lost(c) else live).append(c)
    return live, lost
