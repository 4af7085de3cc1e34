"""What a driver of `EngineCore` lets others plug in: an admission hook and an observer.

`AsyncEngine` (the server) and `Simulator` (virtual time) call them the same way, so what the server wires
(the feedback controller, the dashboard, metrics) runs unchanged under the simulator in tests:
- `admit(scheduler, req, now)` is asked before the scheduler sees a request; a `Rejection` refuses it.
- `observer.on_finish(req)` for every admitted request that ends (any reason), then `observer.on_step(step,
  scheduler)` once per iteration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.core import StepResult
from sliceserve.request import Request


@dataclass(slots=True)
class Rejection:
    """Why a request was not admitted. `kind`: invalid (never feasible), overloaded (not now), queue_full."""

    kind: str
    message: str
    retry_after_s: float | None = None


class EngineObserver(Protocol):
    def on_step(self, step: StepResult, scheduler: Scheduler) -> None: ...
    def on_finish(self, req: Request) -> None: ...


AdmitFn = Callable[[Scheduler, Request, float], Rejection | None]
