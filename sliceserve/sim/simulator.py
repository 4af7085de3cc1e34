"""A tiny event loop on a virtual clock (after vidur): arrivals and timed actions sit in a heap; between
them the engine steps back to back, each step advancing the clock by its modelled duration.

Like the server's `AsyncEngine` it takes an admission hook and an observer (`engine/hooks.py`), called the
same way, so what the server plugs in (the feedback controller: `attach_control`) runs here on virtual time; and
it keeps the server's waiting-queue rules (`engine/door.py`: displacement from a full queue, `max_queue_time_s`)."""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable

from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.core import EngineCore, StepResult
from sliceserve.engine.door import admit_or_displace, end_late, late_requests
from sliceserve.engine.hooks import AdmitFn, EngineObserver
from sliceserve.request import FinishReason, Request


@dataclass(slots=True)
class SimResult:
    requests: list[Request]          # every arrival, in arrival order, each finished one way or another
    end_s: float                     # virtual time when the last request ended
    num_iterations: int
    num_preemptions: int = 0
    num_violation_risks: int = 0
    extra: dict = field(default_factory=dict)


class Simulator:
    def __init__(self, core: EngineCore, max_time_s: float | None = None,
                 max_queue_time_s: float | None = None) -> None:
        """`max_time_s`: virtual time after which unfinished requests are aborted (they count as missed).
        `max_queue_time_s`: the server's setting of that name (None: requests wait for their first token)."""
        self.core = core
        self.max_time_s = max_time_s
        self.max_queue_time_s = max_queue_time_s
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._arrivals: list[Request] = []
        # As on AsyncEngine: asked before the scheduler sees an arrival (a Rejection ends it REJECTED), and
        # told of every admitted request's end and every step.
        self.admit: AdmitFn | None = None
        self.observer: EngineObserver | None = None

    def at(self, time_s: float, action: Callable[[float], None]) -> None:
        """Run `action(now)` at virtual time `time_s` (e.g. inject a slowdown, abort a request)."""
        heapq.heappush(self._events, (time_s, next(self._seq), action))

    def add_arrivals(self, requests: list[Request]) -> None:
        for req in requests:
            self._arrivals.append(req)
            self.at(req.arrival_s, lambda now, r=req: self._arrive(r, now))

    def _arrive(self, req: Request, now: float) -> None:
        verdict, displaced = admit_or_displace(self.core.scheduler, self.admit, req, now)
        if displaced is not None:
            self._ended(displaced)
        if verdict is not None:   # the server answers it with an HTTP error; here it ends refused
            Scheduler.end_unadmitted(req, FinishReason.REJECTED, now, verdict.message)
            return
        self.core.add_request(req, now)

    def _ended(self, req: Request) -> None:
        """An admitted request ended outside a step (displaced, past the queue's time limit, or at the end)."""
        if self.observer is not None:
            self.observer.on_finish(req)

    def _expire_waiting(self, now: float) -> None:
        sched = self.core.scheduler
        for req in end_late(sched, late_requests(sched, now, self.max_queue_time_s), self.max_queue_time_s, now):
            self._ended(req)

    def _observe(self, step: StepResult) -> None:
        for req in step.finished:
            self.observer.on_finish(req)
        self.observer.on_step(step, self.core.scheduler)

    def run(self) -> SimResult:
        core, events = self.core, self._events
        now = 0.0
        while events or core.has_unfinished():
            while events and events[0][0] <= now:
                _, _, action = heapq.heappop(events)
                action(now)
            if self.max_time_s is not None and now >= self.max_time_s:
                break
            if self.max_queue_time_s is not None:
                self._expire_waiting(now)
            if core.has_unfinished():
                step = core.step(now)
                if self.observer is not None:
                    self._observe(step)
                if not step.sched.is_empty:
                    now = step.end_s
                    continue
                if not events:  # nothing can run and nothing will arrive: fail loudly, lose nothing
                    self._abort_all(now, "scheduler could not make progress")
                    break
            if events:
                now = max(now, events[0][0])
        self._abort_all(now, f"still unfinished at the simulation limit ({self.max_time_s} s)")
        sched = core.scheduler
        return SimResult(sorted(self._arrivals, key=lambda r: r.arrival_s), now, core.num_iterations,
                         sched.num_preemptions, sched.num_violation_risks)

    def _abort_all(self, now: float, why: str) -> None:
        for req_id in list(self.core.scheduler.requests):
            req = self.core.scheduler.abort(req_id, now, FinishReason.ABORT, error=why)
            if req is not None:
                self._ended(req)
        for req in self._arrivals:  # arrivals the limit cut off before they were even added
            if not req.status.is_finished:
                Scheduler.end_unadmitted(req, FinishReason.ABORT, now, why)
