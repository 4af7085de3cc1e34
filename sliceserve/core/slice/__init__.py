"""SLICE's parts (arXiv 2510.18544): selection (phase 1), the decode mask (phase 2), feedback; the policy
itself is `sliceserve.core.policies.slice`.

Parameters (SchedulerConfig), with the defaults and why:
- `slice_period_s` = None: the paper's cycle P of 1 s, or twice a 256-token prefill where that is longer
  (`slice_period`). Selection charges a newcomer's prefill to one cycle's spare time plus its members'
  banked slack, so a cycle shorter than a prompt's prefill refuses newcomers whenever members decode: on
  this CPU (p(256) ~ 1 s) two real-time arrivals close together left the second waiting past its TTFT
  (server overload run, docs/SERVER.md). Simulated on a CPU-shaped profile (edge-mix at 1 req/s, seeds
  1-3): real-time attainment 0.857-0.964 with P = 1 s, 0.964-1.000 with P = 1.9-2.25 s. On the paper's
  table 2 x p(256) is 168 ms, so P stays 1 s there.
- `slice_margin` = 0.0: the cycle test alone fills P exactly, so four real-time streams at 20 tokens/s
  fit the paper's table (20 * l(4) = 1000 ms = P) as the paper intends. Protection against prefill,
  best effort and model error comes from the per-iteration guard instead (next item), which only ever
  trims extras, never members' decodes; a margin > 0 still works (the controller raises it on drift).
- `slice_headroom` = 0.02: the guard lets an iteration run only while every decoding member's next token
  stays on or before its TPOT line, first token + n * tpot * (1 - headroom). A token on its line keeps the
  mean TPOT (the SLO, SLICE.md "How success is measured") within bound whatever follows; 2 % keeps float
  rounding and small model error from tipping a token that lands exactly on the line.
- Prefill accounting: a newcomer's prefill is one-time, not per cycle; selection charges it to the cycle's
  spare time plus the smallest banked TPOT slack of the decoding members (`selection.select`). At run
  time a newly selected member's prefill goes first, limited only by the TPOT lines of members of at
  least its utility density, members more than two TPOTs ahead of their line (lower-density members:
  one mean column ahead) sit a column out for it, and best effort waits until it is done. Prompts are
  fused into one iteration only while every prompt it completes still gets its first token within its
  TTFT (on a CPU, ~4 ms per prompt token, three fused real-time prompts made a 2 s iteration that all
  three missed).
- `slice_layout` = "spread": measured better than "prefix" (the paper's) for edge-mix's short real-time
  requests (16-64 tokens, shorter than two cycles): prefix puts every row in column 0, so a request that
  lives about one cycle sees the heavy columns more than the average. Both stay available.
- `slice_misfit` = "skip" (SLICE.md) | "stop" (the reference code: stop the walk at the first request
  that does not fit the cycle or the KV; requests whose TTFT already cannot be met are always skipped).
- `slice_min_rate` = 1: demand of requests without a TPOT SLO. An e2e-only request demands the rate that
  finishes it by its deadline, at least this.
- `slice_backfill_order` = "srpt": best effort (SLICE.md leaves its order open) goes shortest remaining
  work first, which cuts mean completion time; "rank" keeps utility-density order.
- `slice_bank_tokens` = 16: top-density members keep this many TPOTs of banked slack (0.8 s for a 50 ms
  real-time stream) from lower-density work: best effort and lower-density prefill may spend only the slack
  beyond it, and lower-density members ahead of their own line sit columns out while a top-density member is
  short of it. Without it the other classes fill every spare moment, real-time streams run exactly on their
  TPOT line, and a real-time newcomer finds no slack for its prompt (edge-mix rate 5, seed 1: a newcomer
  arriving 50 ms after another was refused for want of slack, then served 0.6 s late). On `paper-4060ti`,
  edge-mix seeds 1-3: real-time at rate 5 0.932/0.925/0.941 without (0) -> 0.953/0.952/0.960 with 16, overall
  attainment at rate 3 0.217/0.229/0.211 -> 0.278/0.251/0.281; 8 and 24 tokens are close, 32 loses real-time
  at rate 5. A one-time cost per stream: once banked, lower-density work gets the spare time again.
- `slice_rank` = "work" (issue 21; "rate" is the paper's U_i / v_i): candidates are ranked by utility,
  then streams already started (as above), then utility per output token left. U / v favours slow-TPOT
  long requests (edge-mix's nrt-250: 1/4 against nrt-100's 1/10), which hold one of the `max_num_seqs`
  slots ~48 s each; per token left, the request that frees its slot soonest goes first. edge-mix on
  `paper-4060ti`, seeds 2-4 (both with `slice_reject_lost`): met requests per second 0.672 vs 0.644 at
  1 req/s, 0.917 vs 0.839 at 2, 1.067 vs 0.944 at 3; nrt-100 0.506 vs 0.348 at 1; real-time 1.000 at
  0.5-3 either way. Without "started first" (utility per token left alone) real-time fell to 0.988 at 2.
- `slice_reject_lost` = True (issue 21): a request whose TTFT passed with no token out is refused
  (`Scheduler.reject`; the server answers 429 slo_infeasible) instead of served best effort. The server
  sets it from `overload` (on with reject). Seeds 2-4: met/s 0.644 vs 0.622 at 1 req/s, 0.839 vs 0.794 at
  2, 0.944 vs 0.900 at 3, real-time unchanged. Cost: one pass over the queues per rebuild.
- `slice_bank_tightest` = True (issue 21): while every request fits the sequence slots (light load) the
  reserve of `slice_bank_tokens` is capped at that many TPOTs of the tightest class seen. Sized on the
  top-density member's own TPOT it was 4 s whenever an nrt-250 stream was on top, and an nrt-100 prompt
  waited for it on an idle device (edge-mix 0.5 req/s seed 4: first token after 1.11 s, TTFT 1 s). Seeds
  2-4: met/s 0.417 vs 0.406 at 0.5, 0.678 vs 0.633 at 0.75, 0.739 vs 0.672 at 1; capped under load too,
  real-time fell to 0.980 at 2.75 req/s, so under load the full reserve stays.
- `slice_drop_lost` = "reject" (issue 21): every admitted request the selection counts as lost (TTFT
  passed without a token, TPOT beyond catching up at `slice_catchup_factor` x its demand, e2e passed) is
  refused at the rebuild instead of served best effort; "relegate" keeps them behind every request that
  can still make it, "park" sets them aside until the device is free, "hopeless" refuses only those that
  cannot make it even alone and parks the rest, "off" serves them as before. The server sets it from
  `overload` (hopeless with reject, else park). Seeds 2-4, requests meeting their SLO summed over the
  sweeps: Azure trace 2,843 vs 2,792, edge-mix 2,308 vs 2,248; measurements and what was not kept: `sliceserve.core.slice.lost`.
- `slice_lend_reserve` = True (issue 21): at light load (every request fits the sequence slots), a lower-
  density member's last prompt chunk may spend the top-density reserve when its TTFT deadline is nearer
  than the reserve's size (it could not wait for the reserve to be banked back); the members' own TPOT
  lines still bind (`fill.ColumnFill._keeps_reserve`). Seeds 2-4, with `slice_drop_lost`, met requests
  summed over the sweeps: Azure trace 2,935 vs 2,843, edge-mix 2,330 vs 2,308; lending under load as well
  gained nothing (2,930 / 2,312) and cost real-time (edge-mix 0.941 at 2.75 req/s seed 3, 0.644 vs 0.684 at 12).
- `slice_wide_columns` = False (issue 21, measured and not kept): the mask keeps the `nested` layout beside
  the configured one and runs the cheaper that fits (`wide.py`): slow rows stack into a few wide columns
  spread over the cycle, real-time rows alone in the others (two real-time streams beside 14 nrt-250: 932 ms
  against 10 fitting balanced). Azure trace seeds 2-4 at 1-4 req/s: 1,882 met against 1,876, real-time 3
  fewer; edge-mix 2,318 against 2,330; decision max 3.4 ms against 1.9. Figures: docs/results/peers-issue21.md 0c.
- `slice_fresh_order` = "off" and `slice_started_first` = "all" (issue 21, both off): the order among
  never-started equals (`progress` | `deadline`) and whether started default-utility streams keep "started
  first" (`valued`: only real-time does); measured, and why neither is on: `sliceserve.core.slice.fresh`.
- `slice_sit_out` = "column" (issue 21, measured and not kept): how far ahead of its own TPOT line a
  lower-density member must be to sit a column out for a higher-density newcomer's prompt: a mean column
  (`column`), or any slack at all (`line`, `fill.ColumnFill._sits_out`). Beside `slice_started_first=valued`
  it recovers the trace's 1.4 req/s real-time cell (0.767 vs 0.770 today, 0.747 with `valued` alone) but not
  edge-mix 6 req/s (0.892 vs 0.912), loses `valued`'s 3 req/s seed-3 gain and most of its extra requests on
  the trace (docs/results/peers-issue21.md 0e).
- `slice_feedback` = True, with `slice_drift_tolerance` = 0.1, `slice_lag_window` = 8 tokens and
  `slice_catchup_factor` = 2 (see `sliceserve.core.slice.feedback` for why each).
- Utilities: `Request.utility` (real-time class 100, others 1: `sliceserve.slo.BUILTIN_CLASSES`).
"""
