"""EngineCore with a controller in the loop: the same core for the simulator and the wall-clock engines.

The controller sees every iteration (calibration, in-flight risk), every finished request (rolling latency
windows) and every arrival (load shedding). With the controller switched off this is EngineCore exactly.
"""
from __future__ import annotations

from sliceserve.control.controller import Controller
from sliceserve.engine.core import EngineCore, StepResult
from sliceserve.core.scheduler import Scheduler
from sliceserve.request import FinishReason, Request


class ControlledEngineCore(EngineCore):
    def __init__(self, scheduler, executor, controller: Controller) -> None:
        super().__init__(scheduler, executor)
        self.controller = controller

    def add_request(self, req: Request, now: float) -> bool:
        error = self.controller.admission_error(req)
        if error is not None:
            Scheduler.end_unadmitted(req, FinishReason.REJECTED, now, error)
            self.controller.observe_finished(req)   # a shed request is a miss of its class: count it
            return False
        return super().add_request(req, now)

    def step(self, now: float) -> StepResult:
        step = super().step(now)
        for req in step.finished:
            self.controller.observe_finished(req)
        self.controller.on_step(step.sched, step.output, step.end_s)
        return step
