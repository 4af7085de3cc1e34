"""EngineCore.step(now): schedule, execute, update. The same code runs on the wall clock (server,
offline LLM) and on the simulator's virtual clock."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.executor import Executor
from sliceserve.request import Request

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StepResult:
    sched: SchedulerOutput
    output: ModelOutput
    start_s: float
    end_s: float
    finished: list[Request] = field(default_factory=list)


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
        if not sched.is_empty:
            self.num_iterations += 1
        return StepResult(sched, output, now, end, finished)
