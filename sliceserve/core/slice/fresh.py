"""Who enters SLICE's selection first among candidates of equal utility (issue 21; both knobs off by default).

With `slice_rank` = work, candidates rank by utility, then started streams first, then utility per output
token left. Two orders around that, each a `SchedulerConfig` field, measured in docs/results/peers-issue21.md
section 0d (edge-mix seeds 2-12, the Azure trace):

- `slice_fresh_order`: among never-started candidates of equal utility, a tier before the utility per token
  left. `progress`: a prompt partly computed goes first, so it is not paused for a newcomer of its class
  with its prefill spent (it does not rank as a started stream: that was tried and lost real-time, 0.944 at
  3 req/s seed 3, since started streams would then compete with prompts). `deadline`: earliest TTFT
  deadline first. Neither rescues the request it was written for (edge-mix 3 req/s seed 3, req-108): ranked
  first, it still fails the selection's banking test (`selection._can_bank`), because the real-time
  members beside it had no banked slack for its prompt; restricted to real-time both change nothing at
  0.25-3 req/s, and over every class they reorder nrt newcomers and lose real-time at 6 req/s.
- `slice_started_first`: `all` (as before) or `valued`: "started first" only for classes given more than
  the default utility (real-time, 100); a started default-utility stream ranks among newcomers of its
  utility by utility per output token left, so a short nrt-100 newcomer passes an nrt-250 stream with
  hundreds of tokens to go (each holds a slot ~48 s at 4 steps a cycle). At 1.25-2 req/s "started first"
  kept 3.6-7.3 started nrt-250 streams ahead of fresh nrt-100/120, which got 2.6-3.6 of the 6-7 rows the
  cycle allows them; `valued` gives them 3.5-4.4, nrt-100/120 within 5 points of SlidingServe at 0.75-1.75
  req/s and +2.8% requests met (seeds 2-4), but real-time 0.902 vs 0.912 at 6 req/s and 0.747 vs 0.770 on
  the trace at 1.4 req/s (younger nrt members bank less slack and so sit out less for a real-time prompt:
  `fill._sits_out`). A looser sit-out rule (`slice_sit_out=line`) does not restore it:
  at 6 req/s the lost real-time requests find four real-time streams that run closer to their TPOT under
  `valued` and free their slots later (docs/results/peers-issue21.md 0e). Read against SLICE before issue 21, the
  issue's own reference, `valued` meets more of its cells on `paper-4060ti`. On the CPU profile the server
  measures, though, it meets fewer SLOs: attainment 0.911 vs 0.939 at 1x and 0.539 vs 0.585 at 2x. There the 16
  sequences and their KV bound the mask, not the cycle: a passed stream is paused and later loses its TPOT, and
  preemptions by recompute rise 1.6-3x. Passing only streams well ahead of their TPOT line does not serve both
  devices either (0h). So it is off by default.
"""
from __future__ import annotations

from sliceserve.request import Request

# A request's utility when its class gives none (`Request.utility`, `SLOClass.utility`).
DEFAULT_UTILITY = 1.0


def fresh_tier(req: Request, mode: str, deadline: float) -> float:
    """The tier of a never-started request under `mode` (lower goes first); 0.0 under `off`."""
    if mode == "progress":
        return 0.0 if req.num_computed_tokens > 0 else 1.0
    if mode == "deadline":
        return deadline
    return 0.0


def ranks_as_started(req: Request, mode: str) -> bool:
    """Whether `req` keeps "started streams first" in the `work` rank under `slice_started_first` = `mode`: it
    has output, and under `valued` its class is worth more than the default utility (a started default-utility
    stream then ranks among newcomers of its utility by utility per output token left alone). The candidates'
    key (`CandidateBuilder.build`) and admission's (`SliceScheduler.admission_key`) both ask this."""
    return req.num_output_tokens > 0 and (mode == "all" or req.utility > DEFAULT_UTILITY)
