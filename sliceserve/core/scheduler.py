"""Shared scheduler bookkeeping. A policy subclasses `Scheduler` and implements `plan(now)`.

The base class owns queues, the KV allocator, admission checks, aborts, and `update()`, which is the only
place request state advances after an iteration. Policies decide *which* requests compute *how many*
tokens; they never touch tokens or timings.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sliceserve.config import SchedulerConfig
from sliceserve.core.batch import Batch
from sliceserve.core.kv_cache import KVBlockAllocator
from sliceserve.core.latency import IterationSample, LatencyModel
from sliceserve.core.outputs import BlockTables, ModelOutput, SchedulerOutput
from sliceserve.core.prefix_cache import PrefixCachingAllocator
from sliceserve.request import FinishReason, Request, RequestStatus


# Prefix of the error of every request a policy refuses from inside plan() (`Scheduler.reject`): the
# server answers those with 429 (try later), not with the queue timeout's 503.
SLO_REFUSAL = "SLO cannot be met under the current load"


def is_slo_refusal(reason: FinishReason | None, error: str | None) -> bool:
    """Whether a request that ended with `reason` and `error` was refused by its policy (`Scheduler.reject`: the
    server answers 429 `slo_infeasible`) rather than timed out in the queue (the engine's `max_queue_time_s`: 503
    `queue_timeout`); both end REJECTED once admitted."""
    return reason is FinishReason.REJECTED and (error or "").startswith(SLO_REFUSAL)


class Scheduler:
    name = "base"
    # Check every planned batch's invariants in schedule() (tests turn it on).
    check_invariants = False

    def __init__(self, config: SchedulerConfig, latency: LatencyModel) -> None:
        self.config = config.validate()
        self.latency = latency
        self.prefix_caching = config.enable_prefix_caching
        self.kv = (PrefixCachingAllocator if self.prefix_caching else KVBlockAllocator)(
            config.num_kv_blocks, config.block_size)
        self.requests: dict[str, Request] = {}   # every unfinished request
        self.waiting: list[Request] = []          # no KV: new, or preempted by recompute
        self.running: list[Request] = []          # holding KV (RUNNING or PAUSED)
        self._preempted: list[str] = []
        self._finished: list[str] = []
        # Requests a policy refused inside plan() (`reject`): handed back by the next update() as ended, so
        # the engine answers their clients at once and the simulator counts them.
        self._rejected: list[Request] = []
        # Of those, the ones refused while parked: the policy was told when they were parked (`on_parked`).
        self._rejected_parked: set[str] = set()
        # Best-effort work set aside (`park`): held by no queue and no KV, out of the policy's sight, served
        # only when nothing else is waiting or running. `_unparked`: those brought back and not yet ended.
        self.parked: list[Request] = []
        self._unparked: set[str] = set()
        # Those the policy parked (not admission's) since the last update(), which tells the policy (`on_parked`)
        # and keeps them as `last_parked` for that step's observers (`StepResult.parked`).
        self._parked_by_policy: list[Request] = []
        self.last_parked: list[Request] = []
        self.num_preemptions = 0
        self.num_violation_risks = 0
        # The last executed iteration's shape and the time the latency model predicted for it beforehand.
        self.last_iteration: tuple[IterationSample, float] | None = None

    # --- requests in and out ---------------------------------------------------------------------------
    def admission_error(self, req: Request) -> str | None:
        """Why `req` can never run on this configuration, or None."""
        if req.num_prompt_tokens == 0:
            return "prompt is empty"
        if req.max_total_tokens > self.config.max_model_len:
            return (f"prompt ({req.num_prompt_tokens} tokens) plus max_tokens ({req.max_tokens}) exceeds "
                    f"max_model_len {self.config.max_model_len}")
        if self.kv.blocks_for(req.max_total_tokens) > self.kv.num_blocks:
            return (f"request needs {self.kv.blocks_for(req.max_total_tokens)} KV blocks but the cache has "
                    f"{self.kv.num_blocks}")
        if self.config.max_waiting and len(self.waiting) >= self.config.max_waiting:
            return f"waiting queue is full ({self.config.max_waiting} requests)"
        return None

    def add_request(self, req: Request, now: float) -> bool:
        """Admit `req` or reject it (status FINISHED, reason REJECTED, `error` says why)."""
        if req.req_id in self.requests:
            raise ValueError(f"duplicate request id {req.req_id!r}")
        error = self.admission_error(req)
        if error is not None:
            self.end_unadmitted(req, FinishReason.REJECTED, now, error)
            return False
        req.status = RequestStatus.WAITING
        self.requests[req.req_id] = req
        if req.park_on_arrival:   # the policy never sees it unless the device runs out of other work
            self._set_aside(req, now)
            return True
        self.waiting.append(req)
        if self.prefix_caching and not req.embed:   # pooling needs every prompt position's hidden state
            self._reuse_prefix(req)
        self.on_arrival(req, now)
        return True

    def abort(self, req_id: str, now: float, reason: FinishReason = FinishReason.ABORT,
              error: str | None = None) -> Request | None:
        req = self.requests.get(req_id)
        if req is None:
            return None
        parked = req.status is RequestStatus.PARKED
        self._finish(req, reason, now)
        req.error = error
        if not parked:   # a parked request's state was dropped when it was parked (`on_parked`)
            self.on_finish(req, now)  # policies drop their per-request state on every kind of end
        return req

    @staticmethod
    def end_unadmitted(req: Request, reason: FinishReason, now: float, error: str | None = None) -> None:
        """End a request that no scheduler holds: refused before admission, cut off by a time limit before it
        arrived, or a remote server's outcome recorded by a client (`bench --url`). Drivers call this rather
        than set `status` themselves: only this module changes a request's status."""
        req.status, req.finish_reason, req.finished_s, req.error = RequestStatus.FINISHED, reason, now, error

    @contextmanager
    def waiting_without(self, req: Request) -> Iterator[None]:
        """The waiting queue as if `req` had left it, restored on exit: an admission check for a request
        that would take its place (the server's displacement of a less valuable one)."""
        at = self.waiting.index(req)
        del self.waiting[at]
        try:
            yield
        finally:
            self.waiting.insert(at, req)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.parked) + sum(r.status is RequestStatus.PAUSED for r in self.running)

    @property
    def num_in_sight(self) -> int:
        """Unfinished requests the policy holds: all but the parked ones."""
        return len(self.requests) - len(self.parked)

    @property
    def has_fresh_work(self) -> bool:
        """Whether the policy holds a request that was never parked and brought back: the condition under
        which best-effort work is set aside rather than served."""
        return len(self.running) + len(self.waiting) > len(self._unparked)

    @property
    def ends_parked_when_hopeless(self) -> bool:
        """Whether the policy itself refuses a parked request the moment its SLO is certain to be missed (SLICE
        with `slice_drop_lost = hopeless`, the server's `overload: reject`): then the queue's time limit need
        not end a parked stream whose SLO can still be met (engine/door.py)."""
        return False

    @property
    def num_running(self) -> int:
        return sum(r.status is RequestStatus.RUNNING for r in self.running)

    # --- one iteration ---------------------------------------------------------------------------------
    def schedule(self, now: float) -> SchedulerOutput:
        if self.parked and not self.waiting and not self.running:
            self._bring_back_parked(now)
        batch = self.plan(now)
        reqs = self.requests
        scheduled: dict[str, Request] = {}
        for rid in batch.prefill:
            scheduled[rid] = req = reqs[rid]
            if req.first_scheduled_s is None:
                req.first_scheduled_s = now
        for rid in batch.decode:
            scheduled[rid] = req = reqs[rid]
            if req.first_scheduled_s is None:
                req.first_scheduled_s = now
        if self.check_invariants:
            self.check_batch(batch, scheduled)
        out = SchedulerOutput(
            prefill=batch.prefill, decode=batch.decode, preempted=self._preempted, finished=self._finished,
            requests=scheduled, block_tables=BlockTables(self.kv.tables(), scheduled),
        )
        self._preempted, self._finished = [], []
        return out

    def check_batch(self, batch: Batch, scheduled: dict[str, Request]) -> None:
        """Internal invariants of a planned batch (on when `check_invariants`; tests turn it on; it costs
        a few microseconds per request, too much for every iteration of a simulation)."""
        assert len(scheduled) == len(batch.prefill) + len(batch.decode), "a request is scheduled twice"
        for rid, req in scheduled.items():
            assert req.status is RequestStatus.RUNNING, f"{rid} scheduled while {req.status.value}"
            n = batch.prefill.get(rid, 1)
            assert n >= 1 and req.num_computed_tokens + n <= req.num_tokens, f"{rid} scheduled past its tokens"
            assert self.kv.num_blocks_held(rid) * self.kv.block_size >= req.num_computed_tokens + n, (
                f"{rid} scheduled without KV")

    def update(self, sched: SchedulerOutput, result: ModelOutput, now: float) -> list[Request]:
        """Advance every scheduled request by what the executor did; returns the requests that ended.
        `now` is when the iteration finished (token timestamps)."""
        ended, self._rejected = self._rejected, []
        reqs = self.requests
        for rid, message in result.errors.items():
            req = reqs.get(rid)
            if req is not None:
                self._finish(req, FinishReason.ERROR, now)
                req.error = message
                ended.append(req)
        for rid, n in sched.prefill.items():
            req = reqs.get(rid)
            if req is not None:
                req.num_computed_tokens += n
                if self.prefix_caching:
                    self.kv.cache_prompt(rid, req.prompt_token_ids, req.num_computed_tokens)
        for rid in sched.decode:
            req = reqs.get(rid)
            if req is not None:
                req.num_computed_tokens += 1
        stopped = result.stopped
        for rid, token in result.sampled.items():
            req = reqs.get(rid)
            if req is None:
                continue  # aborted while the iteration ran
            req.output_token_ids.append(token)
            req.token_times_s.append(now)
            params = req.sampling_params
            # Fast path first: most tokens end nothing.
            if (len(req.output_token_ids) < params.max_tokens and not stopped and not params.stop_token_ids
                    and (params.ignore_eos or req.eos_token_id is None)):
                continue
            reason = self._stop_reason(req, token, rid in stopped)
            if reason is not None:
                self._finish(req, reason, now)
                ended.append(req)
        for rid, vector in result.embeddings.items():
            req = reqs.get(rid)
            if req is not None:   # prefill-only work: its vector is its one result, and its end
                req.embedding = vector
                req.token_times_s.append(now)
                self._finish(req, FinishReason.STOP, now)
                ended.append(req)
        self.observe_iteration(sched, result, now)
        told, self._rejected_parked = self._rejected_parked, set()
        for req in ended:
            if req.req_id not in told:
                self.on_finish(req, now)
        self.last_parked, self._parked_by_policy = self._parked_by_policy, []
        for req in self.last_parked:
            self.on_parked(req, now)
        return ended

    def _stop_reason(self, req: Request, token: int, stop_string: bool) -> FinishReason | None:
        params = req.sampling_params
        if stop_string or token in params.stop_token_ids:
            return FinishReason.STOP
        if not params.ignore_eos and req.eos_token_id is not None and token == req.eos_token_id:
            return FinishReason.STOP
        if len(req.output_token_ids) >= params.max_tokens:
            return FinishReason.LENGTH
        return None

    def observe_iteration(self, sched: SchedulerOutput, result: ModelOutput, now: float) -> None:
        """Feed the measured iteration time to the latency model (policies may extend); keep what it had
        predicted beside it (`last_iteration`) for whoever audits the model."""
        if result.elapsed_s <= 0 or not sched.requests:
            self.last_iteration = None
            return
        sample = sched.executed_sample(result.elapsed_s)
        self.last_iteration = (sample, self.latency.observe(sample))

    # --- policy interface ------------------------------------------------------------------------------
    def plan(self, now: float) -> Batch:
        raise NotImplementedError

    def on_arrival(self, req: Request, now: float) -> None:
        """Hook: a request was admitted."""

    def on_finish(self, req: Request, now: float) -> None:
        """Hook: a request ended (any reason)."""

    def on_parked(self, req: Request, now: float) -> None:
        """Hook: the policy parked a request (`park`). It leaves the policy's sight as an ended one does."""
        self.on_finish(req, now)

    def on_unpark(self, req: Request, now: float) -> None:
        """Hook: a parked request is back in the waiting queue (`_bring_back_parked`): as an arrival."""
        self.on_arrival(req, now)

    # --- helpers for policies --------------------------------------------------------------------------
    def reserve(self, req: Request, num_tokens: int) -> bool:
        """Make sure `req` holds KV for `num_tokens` tokens in total."""
        return self.kv.allocate(req.req_id, num_tokens)

    def start(self, req: Request) -> None:
        """Waiting -> running (the caller has reserved its KV)."""
        self.waiting.remove(req)
        req.status = RequestStatus.RUNNING
        self.running.append(req)

    def reject(self, req: Request, now: float, why: str) -> None:
        """Refuse an admitted request from inside plan() (its SLO can no longer be met): it ends REJECTED
        with `why`, frees its KV, and is returned by the next update() among the ended requests (which
        also calls `on_finish` for it then, once, like for every other end; a parked request's state left the
        policy when it was parked, `on_parked`)."""
        if req.status is RequestStatus.PARKED:
            self._rejected_parked.add(req.req_id)
        self._finish(req, FinishReason.REJECTED, now)
        req.error = f"{SLO_REFUSAL}: {why}"
        self._rejected.append(req)

    def park(self, req: Request, now: float) -> None:
        """Set an admitted request aside as best effort (its SLO is lost, `overload: best_effort`): out of the
        queues, its KV freed (it recomputes when it comes back), and out of the policy's sight until the device
        has nothing else to do. The next update() tells the policy (`on_parked`) and the step reports it
        (`StepResult.parked`), at the moment a refusal would have been told (`reject`). So the rest of the
        schedule is the one `reject` would have run, and parked work runs only on time nobody else needs."""
        (self.waiting if req.status is RequestStatus.WAITING else self.running).remove(req)
        self.kv.free(req.req_id)
        req.num_computed_tokens = 0
        self._preempted.append(req.req_id)   # the executor frees what it holds for it (a llama.cpp sequence)
        self._unparked.discard(req.req_id)
        self._set_aside(req, now)
        self._parked_by_policy.append(req)

    def _set_aside(self, req: Request, now: float) -> None:
        req.status, req.parked_s = RequestStatus.PARKED, now
        self.parked.append(req)

    def _bring_back_parked(self, now: float) -> None:
        """Nothing else to run: every parked request rejoins the waiting queue, oldest first, and the policy
        serves them until fresh work arrives (then it may park them again: `has_fresh_work`)."""
        back, self.parked = sorted(self.parked, key=lambda r: r.arrival_s), []
        for req in back:
            req.status = RequestStatus.WAITING
            self.waiting.append(req)
            self._unparked.add(req.req_id)
            self.on_unpark(req, now)

    def pause(self, req: Request) -> None:
        """Implicit preemption: out of the batch, KV kept."""
        if req.status is RequestStatus.RUNNING:
            req.status = RequestStatus.PAUSED
            self.num_preemptions += 1
            req.num_preemptions += 1

    def resume(self, req: Request) -> None:
        req.status = RequestStatus.RUNNING

    def preempt_recompute(self, req: Request, front: bool = True) -> None:
        """Drop `req`'s KV; it rejoins the waiting queue and recomputes prompt + output so far."""
        self.running.remove(req)
        self.kv.free(req.req_id)
        req.num_computed_tokens = 0
        req.status = RequestStatus.WAITING
        req.num_preemptions += 1
        self.num_preemptions += 1
        self._preempted.append(req.req_id)
        if front:
            self.waiting.insert(0, req)
        else:
            self.waiting.append(req)

    def _reuse_prefix(self, req: Request) -> None:
        """Start a request without KV at its longest cached prompt prefix (at least one token is left to
        compute: sampling needs the last position's logits). Not for a request that wants every prompt
        position's log-probabilities: those need the prompt computed."""
        if req.sampling_params.prompt_logprobs is None:
            req.num_computed_tokens = self.kv.acquire_prefix(req.req_id, req.prompt_token_ids, req.num_tokens - 1)
        if req.num_cached_tokens is None:
            req.num_cached_tokens = req.num_computed_tokens

    def _finish(self, req: Request, reason: FinishReason, now: float) -> None:
        self._unparked.discard(req.req_id)
        if req.status is RequestStatus.PARKED:
            self.parked.remove(req)
        elif req.status is RequestStatus.WAITING:
            self.waiting.remove(req)
        else:
            self.running.remove(req)
        self.kv.free(req.req_id)
        req.status, req.finish_reason, req.finished_s = RequestStatus.FINISHED, reason, now
        del self.requests[req.req_id]
        self._finished.append(req.req_id)
