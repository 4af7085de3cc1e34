"""EngineCore.step(now): schedule, execute, update. The same code runs on the wall clock (server,
offline LLM) and on the simulator's virtual clock."""
from __future__ import annotations

import logging

from sliceserve.core.outputs import ModelOutput, SchedulerOutput, StepResult
from sliceserve.core.scheduler import Scheduler
from sliceserve.executor_api import Executor
from sliceserve.request import Request

log = logging.getLogger(__name__)


class EngineCore:
    def __init__(self, scheduler: Scheduler, executor: Executor) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.num_iterations = 0

    def add_request(self, req: Request, now: float) -> bool:
        return self.scheduler.add_request(req, now)

    def abort(self, req_id: str, now: float) -> Request | None:
        return self.scheduler.abort(req_id, now)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self, now: float) -> StepResult:
        sched = self.scheduler.schedule(now)
        try:
            output = self.executor.execute(sched)
        except Exception as exc:  # one failed iteration fails only the requests in it
            log.exception("iteration failed")
            output = ModelOutput(errors={rid: f"{type(exc).__name__}: {exc}" for rid in sched.requests})
        end = now + output.elapsed_s
        finished = self.scheduler.update(sched, output, end)
        if output.logprobs or output.prompt_logprobs:
            attach_logprobs(sched, output)
        if not sched.is_empty:
            self.num_iterations += 1
        return StepResult(sched, output, now, end, finished, self.scheduler.last_parked)


def attach_logprobs(sched: SchedulerOutput, output: ModelOutput) -> None:
    """Record what the executor reported on the requests (data, not status): an output token's entry once
    the scheduler kept the token, and prompt positions' entries (a recompute writes the same values again)."""
    for rid, entry in output.logprobs.items():
        req = sched.requests.get(rid)
        if req is not None and len(req.logprobs) < req.num_output_tokens:
            req.logprobs.append(entry)
    for rid, entries in output.prompt_logprobs.items():
        req = sched.requests.get(rid)
        if req is None:
            continue
        if len(req.prompt_logprobs) < req.num_prompt_tokens:
            req.prompt_logprobs[:] = [None] * req.num_prompt_tokens
        for position, entry in entries.items():
            req.prompt_logprobs[position] = entry
