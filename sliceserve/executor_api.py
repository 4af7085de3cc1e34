"""What every executor (the real model runner, the simulated one) provides."""
from __future__ import annotations

from typing import Protocol

from sliceserve.core.outputs import ModelOutput, SchedulerOutput


class Executor(Protocol):
    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        """Run exactly the iteration described; free state of `sched.finished` and `sched.preempted`.
        Must not change any request."""
        ...
