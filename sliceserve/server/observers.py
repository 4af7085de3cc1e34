"""Several engine observers behind the one `observer` slot AsyncEngine has (metrics, controller, dashboard)."""
from __future__ import annotations

from typing import Any


class FanOut:
    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def on_step(self, step, scheduler) -> None:
        for o in self.observers:
            o.on_step(step, scheduler)

    def on_finish(self, req) -> None:
        for o in self.observers:
            o.on_finish(req)

    def on_state(self, scheduler) -> None:
        for o in self.observers:
            if hasattr(o, "on_state"):
                o.on_state(scheduler)
