"""The contract between the scheduler and an executor: two plain dataclasses, and the step that joins them.

The scheduler alone changes request state. An executor reads a SchedulerOutput (and the requests it names,
read-only) and returns a ModelOutput.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sliceserve.core.latency import IterationSample, prefill_shape
from sliceserve.request import Request


class BlockTables(Mapping[str, list[int]]):
    """Read-only view of the block tables of the scheduled requests (no per-iteration copy)."""

    __slots__ = ("_tables", "_scheduled")

    def __init__(self, tables: dict[str, list[int]], scheduled: Mapping[str, Request]) -> None:
        self._tables = tables
        self._scheduled = scheduled

    def __getitem__(self, req_id: str) -> list[int]:
        if req_id not in self._scheduled:
            raise KeyError(req_id)
        return self._tables.get(req_id, [])

    def __iter__(self) -> Iterator[str]:
        return iter(self._scheduled)

    def __len__(self) -> int:
        return len(self._scheduled)


@dataclass(slots=True)
class SchedulerOutput:
    # req_id -> tokens to compute this iteration, starting at request.num_computed_tokens: a prompt chunk,
    # or a recompute after preemption. When a chunk reaches the end of the request's tokens, it samples.
    prefill: dict[str, int] = field(default_factory=dict)
    # Requests that feed their last token and sample the next one.
    decode: list[str] = field(default_factory=list)
    # Requests whose KV was dropped this step (recompute preemption): executors forget their state.
    preempted: list[str] = field(default_factory=list)
    # Requests that ended since the last step: executors free their per-request state.
    finished: list[str] = field(default_factory=list)
    # Read-only view of every scheduled request (tokens, positions, sampling params).
    requests: Mapping[str, Request] = field(default_factory=dict)
    # req_id -> KV block ids, for every scheduled request.
    block_tables: Mapping[str, list[int]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.prefill and not self.decode

    def executed_sample(self, elapsed_s: float) -> IterationSample:
        """The shape of this iteration as the latency model sees it, read AFTER the scheduler's update: each
        decode then holds one more computed token than the context it attended, so one is subtracted, and each
        prompt chunk's prefix (what its attention read from the cache) is what it holds less the chunk."""
        tokens, prefix = prefill_shape((n, max(0, self.requests[r].num_computed_tokens - n))
                                       for r, n in self.prefill.items())
        k = len(self.decode)
        if not k:
            return IterationSample(0, 0.0, tokens, elapsed_s, prefill_ctx=prefix)
        ctxs = [self.requests[r].num_computed_tokens - 1 for r in self.decode]
        return IterationSample(k, sum(ctxs) / k, tokens, elapsed_s, prefill_ctx=prefix, decode_ctx_max=max(ctxs))

    def feeds(self) -> list[tuple[Request, int, int]]:
        """(request, first position, number of tokens) an executor feeds: prompt or recompute chunks first
        (tokens [num_computed_tokens, + n)), then decodes (their last token, at num_tokens - 1)."""
        out = [(self.requests[rid], self.requests[rid].num_computed_tokens, n) for rid, n in self.prefill.items()]
        out += [(self.requests[rid], self.requests[rid].num_tokens - 1, 1) for rid in self.decode]
        return out

    def samples(self, req_id: str) -> bool:
        """Whether this iteration yields a token (an `embed` request: its pooled vector) for `req_id`."""
        if req_id in self.prefill:
            req = self.requests[req_id]
            return req.num_computed_tokens + self.prefill[req_id] >= req.num_tokens
        return req_id in self.requests


@dataclass(slots=True)
class ModelOutput:
    # req_id -> sampled token id, for every request whose computation reached its end this iteration.
    sampled: dict[str, int] = field(default_factory=dict)
    # Measured (or, in simulation, modelled) seconds the iteration took.
    elapsed_s: float = 0.0
    # Requests whose sampled token completed a stop string (the executor detokenises; the scheduler can't).
    stopped: set[str] = field(default_factory=set)
    # req_id -> message, for requests this iteration failed on. They end with FinishReason.ERROR.
    errors: dict[str, str] = field(default_factory=dict)
    # req_id -> pooled vector, for `embed` requests whose prompt was completed this iteration (instead of a
    # sampled token; the simulator gives an empty list). They end with FinishReason.STOP.
    embeddings: dict[str, list[float]] = field(default_factory=dict)
    # req_id -> (log p(sampled token), [(id, log p)] alternatives), for requests that asked for logprobs.
    logprobs: dict[str, tuple] = field(default_factory=dict)
    # req_id -> {prompt position: entry} computed this iteration, for requests that asked prompt_logprobs.
    prompt_logprobs: dict[str, dict[int, tuple]] = field(default_factory=dict)


@dataclass(slots=True)
class StepResult:
    """One engine iteration as its observers see it (metrics, controller, dashboard): what was scheduled,
    what the executor returned, when it ran, and the requests it finished."""
    sched: SchedulerOutput
    output: ModelOutput
    start_s: float
    end_s: float
    finished: list[Request] = field(default_factory=list)
    parked: list[Request] = field(default_factory=list)   # set aside since the previous step (`Scheduler.park`)
