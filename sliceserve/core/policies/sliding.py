"""SlidingServe (2026 seed paper: "SlidingServe: sliding-window-driven SLO-aware scheduling for online LLM
inference"; PEERS.md, ../shared/seeds/slidingserve.txt). Headline claims: up to 30% more service capacity
and 16-53% fewer SLO violations under heavy load than advanced schedulers.

Each iteration:
1. Every running request that decodes gets its token (continuous batching), best priority first; when KV
   runs out, the running request with the worst priority key that is not yet in this batch is preempted
   by recompute, and no new request is admitted in that iteration.
2. Prefill candidates (running requests still prefilling, then waiting ones while `max_num_seqs` allows)
   are ordered by the multi-level priority sorter (core/sliding/sorter.py).
3. The SlidingChunker (core/sliding/chunker.py) picks how many prefill tokens ride along, looking one
   iteration ahead, so that every decode keeps its TPOT slack under the batch latency predictor
   (core/sliding/predictor.py, fitted online from every measured iteration). Tokens go to the
   candidates in priority order.
4. BatchConstructor: if that plan makes a request miss its TTFT that could still meet it by running its
   whole remaining prompt now, a 0/1 knapsack (core/sliding/constructor.py, knapsack.py) chooses which
   such requests run this iteration: value = utility, weight = predicted seconds the request adds,
   capacity = the smallest remaining slack (of the batch's decodes and of the candidates) minus the
   decodes' own time.

Choices where the paper is silent (config fields in parentheses):
- Decode budgets: a decode's next token is due at first_token + n_out * tpot (so the mean TPOT, which
  is what the SLO judges, holds); a decode already behind that schedule gets `sliding_tpot_floor` * tpot
  per iteration so it falls no further behind. The two-iteration budget adds one tpot. Decodes with
  only an e2e SLO or none set no per-iteration budget.
- Every budget is shrunk by `sliding_margin` (default 5%) for prediction error.
- Chunk search grid step `sliding_chunk_step` (16 tokens); `sliding_min_chunk` (16) prefill tokens still
  run when every decode is late whatever the chunk (keeps the queue moving).
- At-risk threshold `sliding_risk_factor` (0.5: slack under 1.5x the predicted time needed) and
  relegation of hopeless requests (`sliding_relegate_missed`), see the sorter's docstring.
- Knapsack value = the request's utility (1 unless its class says otherwise), so with equal utilities it
  maximises the number of TTFTs saved; weights discretised into `sliding_knapsack_bins` (100) units,
  rounded up. The knapsack batch carries only the chosen prompts (no extra chunk tokens, which could
  push the chosen past their deadlines); items are dropped, lowest value per token first, if the
  batch exceeds `max_num_batched_tokens` or the predicted time (the prior model is not additive).
  "Capacity = the smallest remaining slack" is taken literally: a candidate with a tiny slack limits
  every other choice even when it is not chosen.
- Admission (`sliding_admit_check`, default on): a waiting request starts only if the decode batch it
  will join (every running request plus it) is predicted to stay within the tightest TPOT in that batch
  (its own included), unless nothing runs. A blocked candidate also blocks those ranked after it (no
  overtaking: otherwise loose-TPOT requests keep the batch too big for a tight-TPOT one forever). The
  paper protects TPOT through the chunk size only; without this check the decode batch itself grows
  past the TPOTs it serves (edge-mix at 1 req/s on paper-4060ti: attainment 0.42 without, 0.63 with), so
  we add it to give the baseline its best showing, and keep it switchable.
- Predictor regimes, window and refit cadence: see core/sliding/predictor.py.
"""
from __future__ import annotations

import math

import numpy as np

from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch
from sliceserve.core.sliding.chunker import PromptRanges, choose_chunks
from sliceserve.core.sliding.constructor import construct
from sliceserve.core.sliding.predictor import BatchFeatures, BatchLatencyPredictor
from sliceserve.core.sliding.sorter import next_deadline_s, rank, remaining_work
from sliceserve.config import SchedulerConfig
from sliceserve.request import Request, RequestStatus


@register("sliding")
class SlidingScheduler(Policy):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        c = self.config
        self.predictor = BatchLatencyPredictor(
            latency, heavy_prefill_tokens=c.sliding_heavy_prefill_tokens, window=c.sliding_predictor_window,
            min_samples=c.sliding_min_samples, refit_every=c.sliding_refit_every)
        self._planned: tuple[dict[str, int], BatchFeatures, float] | None = None
        # Prequential check of the predictor: each iteration is predicted before it is measured, so these
        # are held-out errors. Summed |predicted - measured| / measured, and the count.
        self.prediction_abs_pct_sum = 0.0
        self.num_predictions = 0
        self._rank_ctx: tuple[float, int, float, int] = (0.0, 0, 0.0, 0)
        self.num_knapsack_runs = 0

    # --- predictions -----------------------------------------------------------------------------------
    def _time(self, k: int, dsum: float, chunks: list[tuple[int, int]]) -> float:
        ptok = pctx = psq = 0
        for cached, n in chunks:
            ptok += n
            pctx += n * cached
            psq += n * n
        return self.predictor.predict(BatchFeatures(ptok, k, dsum, float(pctx), len(chunks), float(psq)))

    def _need_s(self, reqs: list[Request], k: int, dsum: float, cap: int) -> np.ndarray:
        """Predicted seconds until each request next samples a token if it ran now with the current
        decodes (its prompt in chunks of at most `cap`); all at once, the waiting queue can be long."""
        rem = np.array([r.num_uncomputed_tokens for r in reqs], dtype=float)
        cached = np.array([r.num_computed_tokens for r in reqs], dtype=float)
        decode_like = (rem <= 1) | (cap <= 0)
        n = np.where(decode_like, 0.0, np.minimum(rem, max(cap, 1)))
        one = np.ones(len(reqs))
        kk = np.where(decode_like, k + 1.0, float(k))
        x = np.column_stack([one, kk + n, n, kk, dsum + np.where(decode_like, cached, 0.0), n * cached,
                             np.where(decode_like, 0.0, 1.0), n * n])
        mult = np.where(decode_like, 1.0, np.ceil(rem / np.maximum(n, 1.0)))
        return self.predictor.predict_matrix(x) * mult

    def _ranked(self, reqs: list[Request], now: float, k: int, dsum: float, cap: int) -> list[Request]:
        """`reqs` in priority-sorter order (see core/sliding/sorter.py)."""
        if not reqs:
            return []
        c = self.config
        slack = np.array([next_deadline_s(r) - now for r in reqs])
        work = np.array([remaining_work(r) for r in reqs])
        order = rank(slack, self._need_s(reqs, k, dsum, cap), work, np.array([r.arrival_s for r in reqs]),
                     c.sliding_risk_factor, c.sliding_relegate_missed)
        return [reqs[i] for i in order]

    # --- KV ------------------------------------------------------------------------------------------
    def _reserve_or_preempt(self, req: Request, num_tokens: int, scheduled: set[str],
                            position: dict[str, int]) -> bool:
        """Reserve KV for `req`, preempting the worst-ranked unscheduled running request while short.
        False when `req` itself was the victim. `position` (running requests' sorter ranks) is filled
        on first need: ranking costs more than the rest of a decode-only iteration."""
        while not self.reserve(req, num_tokens):
            if not position:
                position.update((r.req_id, i) for i, r in enumerate(self._ranked(self.running, *self._rank_ctx)))
            victim = max((r for r in self.running if r.req_id not in scheduled),
                         key=lambda r: position.get(r.req_id, len(position)))
            self.preempt_recompute(victim)
            if victim is req:
                return False
        return True

    # --- the iteration -------------------------------------------------------------------------------
    def plan(self, now: float) -> Batch:
        cfg = self.config
        batch = Batch()
        scheduled: set[str] = set()
        preemptions0 = self.num_preemptions
        decodes = [r for r in self.running if not r.is_prefilling]
        k0, dsum0 = len(decodes), float(sum(r.num_computed_tokens for r in decodes))
        cap = max(0, cfg.max_num_batched_tokens - k0)
        self._rank_ctx = (now, k0, dsum0, cap)
        position: dict[str, int] = {}
        need = sum(self.kv.blocks_needed(r.req_id, r.num_computed_tokens + 1) for r in decodes)
        if need > self.kv.num_free_blocks:  # someone will be preempted: the best-ranked reserve first
            position.update((r.req_id, i) for i, r in enumerate(self._ranked(self.running, now, k0, dsum0, cap)))
            decodes.sort(key=lambda r: position[r.req_id])
        preempted = False
        for req in decodes:
            if req.status is not RequestStatus.RUNNING:
                continue  # preempted for an earlier decode of this loop
            if self._reserve_or_preempt(req, req.num_computed_tokens + 1, scheduled, position):
                batch.add_decode(req)
                scheduled.add(req.req_id)
            else:
                preempted = True
        live = [self.requests[rid] for rid in batch.decode]
        k, dsum = len(live), float(sum(r.num_computed_tokens for r in live))
        cap = max(0, cfg.max_num_batched_tokens - k)
        queue = self._prefill_queue(now, k, dsum, cap, admit=not preempted)
        plan = self._chunk_plan(now, live, queue, cap)
        plan = self._construct(now, live, queue, plan, cap) or plan
        admit = not preempted
        for req, n in plan:
            if req.status is RequestStatus.WAITING:
                # Memory or slots short, or this iteration preempted: no later waiting request is admitted
                # either, so a big prompt is not overtaken forever by smaller ones behind it.
                admit = admit and self.num_preemptions == preemptions0 and len(self.running) < cfg.max_num_seqs
                if not (admit and self.reserve(req, req.num_computed_tokens + n)):
                    admit = False
                    continue
                self.start(req)
            elif not self._reserve_or_preempt(req, req.num_computed_tokens + n, scheduled, position):
                continue
            batch.add_prefill(req, n)
            scheduled.add(req.req_id)
        if batch.num_seqs == 0:
            # The plan's chunks all went to waiting requests that found no KV, while running prompts hold it
            # part-computed: give them the iteration, or nothing ever frees the memory (a deadlock the
            # random-workload test found with 64 blocks).
            running = [r for r in queue if r.status is RequestStatus.RUNNING]
            for req, n in self._chunk_plan(now, live, running, cap):
                if self._reserve_or_preempt(req, req.num_computed_tokens + n, scheduled, position):
                    batch.add_prefill(req, n)
                    scheduled.add(req.req_id)
        self._remember(batch)
        return batch

    def _prefill_queue(self, now: float, k: int, dsum: float, cap: int, admit: bool) -> list[Request]:
        """Prefill candidates in priority order: running ones still prefilling, and waiting ones while
        sequence slots remain (none when `admit` is False) and, with `sliding_admit_check`, while the
        decode batch they will join keeps every TPOT in it."""
        running = [r for r in self.running if r.is_prefilling and r.status is RequestStatus.RUNNING]
        slots = self.config.max_num_seqs - len(self.running) if admit else 0
        if not running and (slots <= 0 or not self.waiting):
            return []
        # The decode batch once every running request decodes: k, context sum, tightest TPOT in it.
        k_all = len(self.running)
        dsum_all = float(sum(r.num_tokens for r in self.running))
        tpots = [r.slo.tpot_s for r in self.running if r.slo.tpot_s is not None]
        tightest = min(tpots, default=float("inf"))
        keep = 1.0 - self.config.sliding_margin
        check = self.config.sliding_admit_check
        ranked = self._ranked(running + (self.waiting if slots > 0 else []), now, k, dsum, cap)
        waiting = [r for r in ranked if r.status is RequestStatus.WAITING]
        decode_s: dict[str, float] = {}   # predicted decode-only time if this request joined; per admission
        queue = [r for r in ranked if r.status is not RequestStatus.WAITING]
        for i, r in enumerate(waiting):
            if slots <= 0:
                break
            bound = min(tightest, r.slo.tpot_s if r.slo.tpot_s is not None else float("inf"))
            if check and k_all > 0 and bound < float("inf"):
                if r.req_id not in decode_s:  # the queue can be long: predict the rest in one go
                    rest = waiting[i:]
                    x = np.zeros((len(rest), 8))
                    x[:, 0], x[:, 1], x[:, 3] = 1.0, k_all + 1, k_all + 1
                    x[:, 4] = dsum_all + np.array([q.num_tokens for q in rest], dtype=float)
                    decode_s = dict(zip((q.req_id for q in rest), self.predictor.predict_matrix(x)))
                if decode_s[r.req_id] > bound * keep:
                    break  # no overtaking: the batch drains until the head fits (else tight TPOTs starve)
            slots -= 1
            k_all, dsum_all, tightest = k_all + 1, dsum_all + r.num_tokens, bound
            decode_s = {}
            queue.append(r)
        position = {r.req_id: i for i, r in enumerate(ranked)}
        return sorted(queue, key=lambda r: position[r.req_id])

    def _budgets(self, now: float, live: list[Request]) -> list[tuple[float, float]]:
        keep = 1.0 - self.config.sliding_margin
        out = []
        for r in live:
            tpot = r.slo.tpot_s
            if tpot is None or not r.token_times_s:
                continue
            first = max(next_deadline_s(r) - now, self.config.sliding_tpot_floor * tpot)
            out.append((first * keep, (first + tpot) * keep))
        return out

    def _chunk_plan(self, now: float, live: list[Request], queue: list[Request], cap: int) -> list[tuple[Request, int]]:
        if not queue or cap <= 0:
            return []
        k, dsum = len(live), float(sum(r.num_computed_tokens for r in live))
        pending = sum(r.num_uncomputed_tokens for r in queue)

        split = PromptRanges(queue)

        def t1(c1: int) -> float:
            return self._time(k, dsum, split(0, c1)[0])

        def t2(c1: int, c2: int) -> float:
            _, done = split(0, c1)
            chunks, _ = split(c1, c1 + c2)
            return self._time(k + len(done), dsum + k + sum(r.num_tokens for r in done), chunks)

        choice = choose_chunks(t1, t2, self._budgets(now, live), cap, cap, pending,
                               self.config.sliding_chunk_step, self.config.sliding_min_chunk)
        plan, pos = [], 0
        for r in queue:
            n = min(r.num_uncomputed_tokens, max(0, choice.first - pos))
            if n > 0:
                plan.append((r, n))
            pos += r.num_uncomputed_tokens
        return plan

    def _construct(self, now: float, live: list[Request], queue: list[Request],
                   plan: list[tuple[Request, int]], cap: int) -> list[tuple[Request, int]] | None:
        """BatchConstructor (core/sliding/constructor.py): a knapsack plan when the chunk plan makes a
        savable TTFT miss, else None."""
        if not queue:
            return None
        k, dsum = len(live), float(sum(r.num_computed_tokens for r in live))
        out = construct(now, queue, plan, [s for s, _ in self._budgets(now, live)],
                        lambda chunks: self._time(k, dsum, chunks), cap, self.config.sliding_margin,
                        self.config.sliding_knapsack_bins)
        if out.triggered:
            self.num_knapsack_runs += 1
            self.num_violation_risks += 1
        return out.plan

    # --- learning ------------------------------------------------------------------------------------
    def _remember(self, batch: Batch) -> None:
        reqs = self.requests
        feats = BatchFeatures.of((reqs[rid].num_computed_tokens for rid in batch.decode),
                                 ((reqs[rid].num_computed_tokens, n) for rid, n in batch.prefill.items()))
        self._planned = (batch.prefill, feats, self.predictor.predict(feats))

    def observe_iteration(self, sched: SchedulerOutput, result: ModelOutput, now: float) -> None:
        super().observe_iteration(sched, result, now)
        planned, self._planned = self._planned, None
        if planned is not None and planned[0] is sched.prefill and result.elapsed_s > 0 and sched.requests:
            self.prediction_abs_pct_sum += abs(planned[2] - result.elapsed_s) / result.elapsed_s
            self.num_predictions += 1
            self.predictor.observe(planned[1], result.elapsed_s)

    @property
    def prediction_mape(self) -> float | None:
        """Mean absolute percentage error of the batch predictor over the iterations run so far."""
        return self.prediction_abs_pct_sum / self.num_predictions if self.num_predictions else None
