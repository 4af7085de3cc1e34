"""The `activity` section of GET /v1/status: the recorder's snapshot plus what the page draws it against
(each class's bounds and utility, the memory target)."""
from __future__ import annotations

from typing import Any


def activity_status(state: Any, now_s: float) -> dict | None:
    recorder = getattr(state, "activity", None)
    if recorder is None:
        return None
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    classes = {name: {"ttft_ms": ms(c.slo.ttft_s), "tpot_ms": ms(c.slo.tpot_s), "e2e_ms": ms(c.slo.e2e_s),
                      "utility": c.utility} for name, c in sorted(state.classes.items())}
    settings = state.settings
    return {"now_s": now_s, "slo_classes": classes, "memory_limit_bytes": settings.memory_limit_bytes(),
            **recorder.snapshot(state.engine.core.scheduler)}
