"""SLICE's order among never-started candidates of equal utility (`slice_fresh_order`, issue 21).

With `slice_rank` = work, candidates rank by utility, then started streams first, then utility per output
token left. Among never-started requests of one class that last key is shortest-output-first: a fresh
real-time request with fewer tokens to write outranks one that arrived earlier, whatever their TTFTs.
Edge-mix, `paper-4060ti`, 3 req/s, seed 3 (the one real-time request of 36 SLICE missed, where a 4-slot
first-come server serves all 36): four real-time streams filled the cycle; req-108 (225-token prompt,
TTFT deadline 35.676 s) waited for a slot. At 35.394 s a stream finished and req-109 (86 tokens, arrived
35.351 s, deadline 35.851 s, fewer output tokens) took the slot; at 35.503 s req-109's first token was
predicted late and req-108 took it and prefilled 83 tokens; at 35.558 s req-109 ranked above it again, and
req-108 was paused with 142 prompt tokens left. When the next slot freed (35.596 s) its first token could
no longer come by 35.676 s: refused. Both could have made their TTFT in deadline order.

Modes (a tier placed between "started first" and the utility per token left, for fresh candidates only;
started streams keep tier 0, so nothing changes between them):
- `off`: no tier (as before).
- `progress`: a fresh request whose prompt is partly computed goes before fresh requests with nothing
  computed, so a prompt in progress is not paused for a newcomer of its class (the prefill already spent
  is not thrown away, and the flip-flop above cannot happen). It does not rank a prompt in progress as a
  started stream: that was tried and lost real-time (0.944 at 3 req/s, seed 3): started streams whose
  TPOT lines hold would then compete with prompts.
- `deadline`: fresh requests of equal utility go earliest selection deadline (TTFT) first: earliest
  deadline first meets every deadline whenever any order does (for one server), and the class's TTFT,
  not its output length, is what a never-started request can still lose.
"""
from __future__ import annotations

from sliceserve.core.slice.selection import Candidate
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


def default_work_by_tokens_left(cands: list[Candidate]) -> None:
    """`slice_started_first` = valued: started streams of the default utility (every class not given more
    value) lose "started first" and rank among newcomers of their utility by utility per output token left
    alone (`cands`: the candidates built this rebuild, every started one among them; never-run ones, in the
    waiting index's pool, have no output and keep their key)."""
    for c in cands:
        if c.req.utility <= DEFAULT_UTILITY and c.req.output_token_ids:
            c.started_first = False
