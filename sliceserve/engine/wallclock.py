"""A synchronous wall-clock driver for EngineCore: the real-time twin of the simulator's event loop.

Time is read here (time.monotonic by default) and passed to the engine as `now`, in seconds since the run
started, so request timestamps have the same origin as the simulator's (0 = start of the workload).
Requests carry their arrival offset in `arrival_s`; the driver adds each one once its time has come,
steps back to back while anything is runnable, and sleeps only when idle until the next arrival.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from sliceserve.core.latency import IterationSample
from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.core import EngineCore, StepResult
from sliceserve.request import FinishReason, Request


@dataclass(slots=True)
class DriveResult:
    requests: list[Request]            # every arrival, in arrival order, each finished one way or another
    end_s: float                       # seconds since the start when the last request ended
    num_iterations: int
    num_preemptions: int = 0
    num_violation_risks: int = 0
    # What each non-empty iteration computed and how long it took (for simulator-fidelity checks).
    iterations: list[IterationSample] = field(default_factory=list)


def iteration_sample(step: StepResult) -> IterationSample:
    """The shape of one executed iteration, as the latency model sees it."""
    return step.sched.executed_sample(step.output.elapsed_s)


class WallClockDriver:
    def __init__(self, core: EngineCore, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 on_step: Callable[[StepResult], None] | None = None,
                 on_finish: Callable[[Request], None] | None = None) -> None:
        self.core = core
        self._clock = clock
        self._sleep = sleep
        self._on_step = on_step
        self._on_finish = on_finish

    def run(self, requests: Iterable[Request], max_time_s: float | None = None) -> DriveResult:
        """Run until every request has ended. `max_time_s`: seconds after which the unfinished are aborted."""
        pending = sorted(requests, key=lambda r: r.arrival_s)
        arrivals = list(pending)
        pending.reverse()  # pop() from the end = earliest arrival
        core = self.core
        iterations: list[IterationSample] = []
        t0 = self._clock()
        now = 0.0
        while pending or core.has_unfinished():
            now = self._clock() - t0
            while pending and pending[-1].arrival_s <= now:
                req = pending.pop()
                if not core.add_request(req, now):
                    self._notify_finished([req])  # rejected on admission
            if max_time_s is not None and now >= max_time_s:
                break
            if core.has_unfinished():
                step = core.step(now)
                if not step.sched.is_empty:
                    iterations.append(iteration_sample(step))
                    self._notify_finished(step.finished)
                    if self._on_step is not None:
                        self._on_step(step)
                    continue
                # Failed iterations (errors, no samples) also end requests: report them.
                self._notify_finished(step.finished)
                if not pending:  # nothing runs and nothing will arrive: fail loudly, lose nothing
                    self._abort_all(now, "scheduler could not make progress")
                    break
            if pending:   # idle until the next arrival (or the limit): a fresh read, the pass is over
                elapsed = self._clock() - t0
                wait = pending[-1].arrival_s - elapsed
                if max_time_s is not None:
                    wait = min(wait, max_time_s - elapsed)
                if wait > 0:
                    self._sleep(wait)
        now = self._clock() - t0
        self._abort_all(now, f"still unfinished at the time limit ({max_time_s} s)")
        for req in reversed(pending):  # arrivals the limit cut off before they were even added
            Scheduler.end_unadmitted(req, FinishReason.ABORT, now, f"arrived after the time limit ({max_time_s} s)")
            self._notify_finished([req])
        # One empty step hands the last `finished` ids to the executor so it frees their state now,
        # not whenever this engine is next used.
        core.step(now)
        sched = core.scheduler
        end = max((r.finished_s for r in arrivals if r.finished_s is not None), default=now)
        return DriveResult(arrivals, end, core.num_iterations, sched.num_preemptions,
                           sched.num_violation_risks, iterations)

    def _notify_finished(self, reqs: list[Request]) -> None:
        if self._on_finish is not None:
            for req in reqs:
                self._on_finish(req)

    def _abort_all(self, now: float, why: str) -> None:
        scheduler = self.core.scheduler
        for req_id in list(scheduler.requests):
            req = scheduler.abort(req_id, now, FinishReason.ABORT, error=why)
            if req is not None:
                self._notify_finished([req])
