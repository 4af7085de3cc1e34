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

Counters for observation and tests: `num_demotions`, `num_starvation_promotions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.policies import register
from sliceserve.core.scheduler import Batch, Scheduler
from sliceserve.request import Request, RequestStatus


# Priority as one int (level first, then entry order) so sorting compares ints, not tuples.
_LEVEL_SHIFT = 1 << 48


@dataclass(slots=True)
class _MLFQState:
    req: Request
    level: int
    used_s: float        # execution time charged at the current level
    last_run_s: float    # when it last ran (or arrived, or was promoted)
    prio: int = 0        # level * _LEVEL_SHIFT + entry order into the level: lower runs first


_PRIO = attrgetter("prio")


@register("fastserve")
class FastServeScheduler(Scheduler):
    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        super().__init__(config, latency)
        q0 = config.fastserve_q0_s if config.fastserve_q0_s is not None else latency.decode_time(1, 0.0)
        self.q0_s = q0
        n = config.fastserve_num_queues
        # The last level never demotes: an infinite quantum.
        self.quanta_s = [q0 * 2 ** p for p in range(n - 1)] + [float("inf")]
        self._state: dict[str, _MLFQState] = {}
        self._order: list[_MLFQState] = []   # states by priority, rebuilt only after a change
        self._order_dirty = False
        self._seq = 0
        self.num_demotions = 0
        self.num_starvation_promotions = 0

    # --- queue bookkeeping -----------------------------------------------------------------------------
    def level_of(self, req_id: str) -> int:
        return self._state[req_id].level

    def _enter(self, st: _MLFQState, level: int) -> None:
        """Put `st` at the tail of queue `level` with nothing used there."""
        self._seq += 1
        st.level, st.used_s, st.prio = level, 0.0, level * _LEVEL_SHIFT + self._seq
        self._order_dirty = True

    def on_arrival(self, req: Request, now: float) -> None:
        prefill_s = self.latency.prefill_time(req.num_prompt_tokens)
        level = next((p for p, q in enumerate(self.quanta_s) if q >= prefill_s), len(self.quanta_s) - 1)
        st = _MLFQState(req, level, 0.0, now)
        self._enter(st, level)
        self._state[req.req_id] = st

    def on_finish(self, req: Request, now: float) -> None:
        if self._state.pop(req.req_id, None) is not None:
            self._order_dirty = True

    def observe_iteration(self, sched: SchedulerOutput, result: ModelOutput, now: float) -> None:
        super().observe_iteration(sched, result, now)
        elapsed = result.elapsed_s
        states, quanta, last = self._state, self.quanta_s, len(self.quanta_s) - 1
        for rid in sched.requests:
            st = states.get(rid)
            if st is None:
                continue  # ended in this iteration
            st.last_run_s = now
            st.used_s += elapsed
            if st.level < last and st.used_s >= quanta[st.level]:
                self._enter(st, st.level + 1)
                self.num_demotions += 1

    # --- one iteration ---------------------------------------------------------------------------------
    def _promote_starving(self, now: float) -> None:
        limit = self.config.fastserve_starvation_s
        for st in self._state.values():
            if now - st.last_run_s >= limit:
                st.last_run_s = now  # restart the clock so a request is promoted once per period
                if st.level > 0 or st.used_s > 0:
                    self._enter(st, 0)
                    self.num_starvation_promotions += 1

    def plan(self, now: float) -> Batch:
        self._promote_starving(now)
        batch = Batch()
        prefill, decode = batch.prefill, batch.decode
        chosen: set[str] = set()
        budget = self.config.max_num_batched_tokens
        max_seqs = self.config.max_num_seqs
        allocate = self.kv.allocate
        if self._order_dirty:
            self._order = sorted(self._state.values(), key=_PRIO)
            self._order_dirty = False
        for st in self._order:
            if len(chosen) >= max_seqs or budget <= 0:
                break
            req = st.req
            computed = req.num_computed_tokens
            missing = len(req.prompt_token_ids) + len(req.output_token_ids) - computed
            n = missing if missing < budget else budget
            status = req.status
            if not allocate(req.req_id, computed + n):
                # A waiting request (no KV yet) only takes free KV: evicting for it thrashes (docstring).
                if status is RequestStatus.WAITING or not self._evict_for(st, computed + n, chosen):
                    continue  # its turn comes when memory frees up; paused meanwhile if it holds KV
            if status is RequestStatus.WAITING:
                self.start(req)
            elif status is RequestStatus.PAUSED:
                self.resume(req)
            chosen.add(req.req_id)
            if missing > 1:
                prefill[req.req_id] = n
            else:
                decode.append(req.req_id)
            budget -= n
        batch.num_tokens = self.config.max_num_batched_tokens - budget
        for req in self.running:
            if req.status is RequestStatus.RUNNING and req.req_id not in chosen:
                self.pause(req)
        return batch

    def _evict_for(self, st: _MLFQState, num_tokens: int, chosen: set[str]) -> bool:
        """Let KV holder `st.req` grow to `num_tokens` by preempting lower-priority holders outside the
        batch by recompute, lowest first. False, with nothing preempted, when that is not enough."""
        kv, req, states = self.kv, st.req, self._state
        need = kv.blocks_needed(req.req_id, num_tokens)
        victims = sorted((r for r in self.running if r.req_id not in chosen and r is not req
                          and states[r.req_id].prio > st.prio), key=lambda r: states[r.req_id].prio, reverse=True)
        if need > kv.num_free_blocks + sum(kv.num_blocks_held(v.req_id) for v in victims):
            return False
        for victim in victims:
            self.preempt_recompute(victim, front=False)
            if need <= kv.num_free_blocks:
                break
        return kv.allocate(req.req_id, num_tokens)
