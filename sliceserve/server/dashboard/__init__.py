"""The live dashboard: GET /dashboard (one self-contained HTML page polling /v1/status) and the activity
recorder that gives /v1/status the history the page draws (iterations, decode mask, refusals)."""
from __future__ import annotations

from typing import Any

from sliceserve.server.dashboard.activity import ActivityRecorder
from sliceserve.server.observers import FanOut


def attach_dashboard(app: Any, state: Any) -> ActivityRecorder:
    """Record activity on `state`'s engine and serve the page. Call after the controller is attached (its
    observer chain is extended, not replaced)."""
    from sliceserve.server.dashboard.router import router

    engine = state.engine
    recorder = ActivityRecorder()
    engine.observer = FanOut(engine.observer, recorder)
    state.activity = recorder
    app.state.activity = recorder
    app.include_router(router)
    return recorder
