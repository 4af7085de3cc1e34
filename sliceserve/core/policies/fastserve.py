"""FastServe: skip-join multi-level feedback queue (Wu et al., "Fast Distributed Inference Serving for
Large Language Models", arXiv 2305.05920, 2023, section 4).

FastServe approximates shortest-remaining-time-first without knowing output lengths: every request
starts high and sinks as it consumes service, so short jobs finish ahead of long ones. Choices:

- Queues: `config.fastserve_num_queues` levels (default 6); level `p` has quantum `q0 * 2**p`. The last
  level has no quantum: requests stay there.
- `q0`: `config.fastserve_q0_s`; when None, one predicted decode iteration at batch 1 of this
  scheduler's latency model. The paper's code uses 10 ms on its GPU, about one decode iteration there;
  scaling to the device keeps the ratio between quantum and iteration that the paper had.
- Skip-join: a request enters the highest level whose quantum covers its predicted prefill time
  (`latency.prefill_time(prompt)`), so a long prompt does not preempt everything during its first
  iteration only to be demoted right after.
- Demotion: each iteration charges its measured (or, in simulation, modelled) seconds to every request
  it contained, at that request's current level (`observe_iteration`, time passed in). A request that
  has used its level's quantum drops one level and starts the new level with nothing used.
- Selection: each iteration the batch is filled from the highest non-empty level down, FCFS within a
  level (order of entry into it), up to `max_num_seqs` requests and `max_num_batched_tokens` tokens
  (prompts may be chunked; the paper prefills whole, chunking keeps iteration times bounded here).
- Preemption: requests holding KV that do not make the batch are paused (KV kept, `Scheduler.pause`),
  as the paper's "proactive" KV management keeps the state of preempted jobs. When a selected request
  that holds KV needs more and memory is short, lower-priority holders not in the batch are preempted by
  recompute, lowest priority first (this project has no host swap space; the paper swaps to host
  memory). A waiting request (no KV yet) is started only into free KV and never evicts: with recompute
  instead of swap, evicting for admission thrashed. Measured on the simulator (paper-4060ti, 200 requests
  at 20/s, prompts 10-300, outputs 1-200, 400 KV blocks): evicting for admission took 1095 virtual
  seconds and 18,267 recomputes; admitting only into free KV took 187 s and 456 (vllm: 162 s).
- Starvation guard: a request that has not run for `config.fastserve_starvation_s` (paper: 3 s) returns
  to the top level, at its tail, and its waiting clock restarts.

Cost under overload (thousands waiting): no step is O(waiting); how, in `sliceserve.core.fastserve.levels`.

Counters for observation and tests: `num_demotions`, `num_starvation_promotions`.
"""
from __future__ import annotations

from collections.abc import Iterator

from sliceserve.config import SchedulerConfig
from sliceserve.core.fastserve.levels import (
    HOLDER, NO_ENTRY, Level, MLFQState, arrival_no_of, check_index, evict_for, victims_below)
from sliceserve.core.kv_cache import KVBlockAllocator
from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.policies import register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch
from sliceserve.request import Request, RequestStatus

# Enum members as module constants: `RequestStatus.WAITING` costs ~0.5 us per lookup on Python 3.11 (the
# enum metaclass), a few lookups per request per iteration were most of `plan`'s time.
_WAITING, _RUNNING, _PAUSED = RequestStatus.WAITING, RequestStatus.RUNNING, RequestStatus.PAUSED


@register("fastserve")
class FastServeScheduler(Policy):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        q0 = config.fastserve_q0_s if config.fastserve_q0_s is not None else latency.decode_time(1, 0.0)
        self.q0_s = q0
        n = config.fastserve_num_queues
        # The last level never demotes: an infinite quantum.
        self.quanta_s = [q0 * 2 ** p for p in range(n - 1)] + [float("inf")]
        self._state: dict[str, MLFQState] = {}        # in arrival order
        self._levels = [Level() for _ in range(n)]
        self._by_seq: dict[int, MLFQState] = {}       # entry number -> state
        # The states the starvation guard could promote (`_promotable`), by last run, oldest first as
        # long as time passed in never went back (`_ran_sorted`).
        self._ran: dict[str, MLFQState] = {}
        self._ran_sorted = True
        self._ran_max = float("-inf")
        self._last_batch: list[Request] = []
        self._moved: list[MLFQState] = []  # states that started or were evicted during this plan
        # Without prefix sharing a waiting request holds no KV, so needing more blocks than are free
        # proves its allocation fails; shared prefixes hold blocks, and then every waiting entry is tried.
        self._fit_filter = type(self.kv) is KVBlockAllocator
        self._seq = 0
        self._arrivals = 0
        self.num_demotions = 0
        self.num_starvation_promotions = 0

    # --- queue bookkeeping -----------------------------------------------------------------------------
    def level_of(self, req_id: str) -> int:
        return self._state[req_id].level

    def _waiting_blocks(self, req: Request) -> int:
        """Index key: KV blocks of the whole sequence for a waiting request, HOLDER for the others."""
        if req.status is _WAITING:
            return self.kv.blocks_for(len(req.prompt_token_ids) + len(req.output_token_ids))
        return HOLDER

    def _enter(self, st: MLFQState, level: int) -> None:
        """Put `st` at the tail of queue `level` with nothing used there."""
        if st.seq:
            self._levels[st.level].remove(st.seq, st.blocks)
            del self._by_seq[st.seq]
        self._seq += 1
        seq = self._seq
        st.level, st.used_s, st.seq = level, 0.0, seq
        st.blocks = self._waiting_blocks(st.req)
        self._levels[level].add(seq, st.blocks)
        self._by_seq[seq] = st

    def _track(self, st: MLFQState) -> None:
        """Keep `_ran` true after `st.last_run_s` was set or `st` changed level.

        A state at the top level with nothing used is left out: the guard would only restart its clock,
        which nothing reads before the request runs again, and running sets the clock anew."""
        ran, rid = self._ran, st.req.req_id
        ran.pop(rid, None)
        if st.level > 0 or st.used_s > 0:
            ran[rid] = st
            if st.last_run_s >= self._ran_max:
                self._ran_max = st.last_run_s
            else:
                self._ran_sorted = False  # the guard scans them all once and re-sorts

    def on_arrival(self, req: Request, now: float) -> None:
        prefill_s = self.latency.prefill_time(req.num_prompt_tokens)
        level = next((p for p, q in enumerate(self.quanta_s) if q >= prefill_s), len(self.quanta_s) - 1)
        self._arrivals += 1
        st = MLFQState(req, level, 0.0, now, arrival_no=self._arrivals)
        self._enter(st, level)
        self._state[req.req_id] = st
        self._track(st)

    def on_finish(self, req: Request, now: float) -> None:
        st = self._state.pop(req.req_id, None)
        if st is not None:
            self._levels[st.level].remove(st.seq, st.blocks)
            del self._by_seq[st.seq]
            self._ran.pop(req.req_id, None)

    def observe_iteration(self, sched: SchedulerOutput, result: ModelOutput, now: float) -> None:
        super().observe_iteration(sched, result, now)
        elapsed = result.elapsed_s
        states, quanta, last, ran = self._state, self.quanta_s, len(self.quanta_s) - 1, self._ran
        for rid in sched.requests:
            # A request that ended in this iteration is still here (on_finish comes after) and is
            # charged like the others, as it always was.
            st = states.get(rid)
            if st is None:
                continue
            st.last_run_s = now
            st.used_s += elapsed
            if st.level < last and st.used_s >= quanta[st.level]:
                self._enter(st, st.level + 1)
                self.num_demotions += 1
            # _track, inlined: this runs for every request of every iteration.
            ran.pop(rid, None)
            if st.level > 0 or st.used_s > 0:
                ran[rid] = st
        if now >= self._ran_max:
            self._ran_max = now
        else:
            self._ran_sorted = False

    # --- one iteration ---------------------------------------------------------------------------------
    def _promote_starving(self, now: float) -> None:
        limit = self.config.fastserve_starvation_s
        if self._ran_sorted:
            # `now - t >= limit` holds for every t up to some bound (float subtraction is monotonic), so
            # the starving ones are a prefix of the oldest-first order.
            starving = []
            for st in self._ran.values():
                if now - st.last_run_s < limit:
                    break
                starving.append(st)
            if not starving:
                return
        else:
            starving = [st for st in self._ran.values() if now - st.last_run_s >= limit]
        starving.sort(key=arrival_no_of)  # promotions enter the top queue in arrival order
        for st in starving:
            st.last_run_s = now  # restart the clock so a request is promoted once per period
            self._enter(st, 0)
            self.num_starvation_promotions += 1
            self._track(st)
        if not self._ran_sorted:
            self._ran = dict(sorted(self._ran.items(), key=lambda item: item[1].last_run_s))
            self._ran_max = max((st.last_run_s for st in self._ran.values()), default=float("-inf"))
            self._ran_sorted = True

    def plan(self, now: float) -> Batch:
        self._promote_starving(now)
        if self.check_invariants:
            self._check_index()
        batch = Batch()
        chosen: set[str] = set()
        batch_reqs: list[Request] = []
        batch.num_tokens = self.config.max_num_batched_tokens - self._walk(batch, chosen, batch_reqs)
        # Only the last batch's requests can be running: nothing else starts or resumes them.
        for req in self._last_batch:
            if req.status is _RUNNING and req.req_id not in chosen:
                self.pause(req)
        self._last_batch = batch_reqs
        if self.check_invariants:
            assert all(r.status is not RequestStatus.RUNNING or r.req_id in chosen for r in self.running)
        if self._moved:
            self._reindex(self._moved)
        return batch

    def _walk(self, batch: Batch, chosen: set[str], batch_reqs: list[Request]) -> int:
        """Take requests level by level, highest first, into `batch` until it is full; returns the token
        budget left."""
        prefill, decode = batch.prefill, batch.decode
        budget = self.config.max_num_batched_tokens
        max_seqs = self.config.max_num_seqs
        by_seq, moved, allocate = self._by_seq, self._moved, self.kv.allocate
        # Visit each level's entries in entry order, holders and waiting merged; a waiting entry is
        # visited only when it could fit into the free KV (otherwise its allocation would fail and it
        # would be passed over). The index does not change during the loop: starts and evictions are
        # re-indexed afterwards, and an evicted holder is still visited, now as a waiting request.
        budget_now = [budget]   # what the merging generator reads
        full = False
        for level in self._levels:
            if level.wait:
                entries: Iterator[MLFQState] = self._merged(level, budget_now)
            elif level.hold:
                entries = map(by_seq.__getitem__, level.hold)   # holders only: the common case
            else:
                continue
            for st in entries:
                if len(chosen) >= max_seqs or budget <= 0:
                    full = True
                    break
                req = st.req
                computed = req.num_computed_tokens
                missing = len(req.prompt_token_ids) + len(req.output_token_ids) - computed
                n = missing if missing < budget else budget
                status = req.status
                if not allocate(req.req_id, computed + n):
                    # A waiting request (no KV yet) only takes free KV: evicting for it thrashes (docstring).
                    if status is _WAITING or not self._evict_for(st, computed + n, chosen):
                        continue  # its turn comes when memory frees up; paused meanwhile if it holds KV
                if status is _WAITING:
                    self.start(req)
                    moved.append(st)
                elif status is _PAUSED:
                    self.resume(req)
                chosen.add(req.req_id)
                batch_reqs.append(req)
                if missing > 1:
                    prefill[req.req_id] = n
                else:
                    decode.append(req.req_id)
                budget -= n
                budget_now[0] = budget
            if full:
                break
        return budget

    def _merged(self, level: Level, budget_now: list[int]) -> Iterator[MLFQState]:
        """`level`'s holders and its waiting entries that could fit the free KV, in entry order."""
        kv, by_seq, moved, hold = self.kv, self._by_seq, self._moved, level.hold
        block_size, fit_filter = kv.block_size, self._fit_filter
        hi, num_hold, after = 0, len(hold), 0
        # The next waiting entry worth a visit is looked up again only when the set of those that fit may
        # have grown: after it was visited, after a preemption (free KV grew), or once the budget fell to
        # what the free KV holds (then any prompt fits, chunked). Otherwise that set only shrinks, and at
        # worst the cached entry no longer fits, fails to allocate and is passed over as it would have been.
        next_wait, stale, limited, num_moved = NO_ENTRY, True, False, len(moved)
        while True:
            if stale or len(moved) != num_moved or (limited and budget_now[0] <= kv.num_free_blocks * block_size):
                free = kv.num_free_blocks
                limited = fit_filter and budget_now[0] > free * block_size
                next_wait = level.next_waiting(after, free if limited else None)
                stale, num_moved = False, len(moved)
            if hi < num_hold and hold[hi] < next_wait:
                after = hold[hi]
                hi += 1
            elif next_wait != NO_ENTRY:
                after = next_wait
                stale = True
            else:
                return
            yield by_seq[after]

    def _reindex(self, moved: list[MLFQState]) -> None:
        """File started and evicted requests under holders or waiting, as their status now says."""
        for st in moved:
            blocks = self._waiting_blocks(st.req)
            if blocks != st.blocks:
                level = self._levels[st.level]
                level.remove(st.seq, st.blocks)
                st.blocks = blocks
                level.add(st.seq, blocks)
        moved.clear()

    def _evict_for(self, st: MLFQState, num_tokens: int, chosen: set[str]) -> bool:
        """Let KV holder `st.req` grow to `num_tokens` by preempting lower-priority holders outside the
        batch by recompute, lowest first. False, with nothing preempted, when that is not enough."""
        return evict_for(self.kv, st.req.req_id, num_tokens, victims_below(self._levels, self._by_seq, st, chosen),
                         self._preempt)

    def _preempt(self, victim: MLFQState) -> None:
        self.preempt_recompute(victim.req, front=False)
        self._moved.append(victim)

    def _check_index(self) -> None:
        """Internal invariants of the queue index (on when `check_invariants`, as tests run)."""
        assert self._ran.keys() == {rid for rid, st in self._state.items() if st.level > 0 or st.used_s > 0}
        if self._ran_sorted:
            times = [st.last_run_s for st in self._ran.values()]
            assert times == sorted(times), "last-run order broken"
        check_index(self._levels, self._by_seq, list(self._state.values()), self._waiting_blocks)
