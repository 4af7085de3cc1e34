"""GET /v1/status: device, memory, utilisation, power, queues, per-class latency and attainment, and the
active policy settings and controller decisions, as one JSON object.

The router reads `app.state.serving` (ServingState) and, when registered, `app.state.controller`
(sliceserve.control.controller.Controller), `app.state.monitor` (sliceserve.resources.Monitor) and
`app.state.latency_tracker`. Every part is optional: a server without a controller reports `controller:
null` rather than failing.
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from fastapi import APIRouter, Request as HTTPRequest

from sliceserve.resources import Monitor
from sliceserve.server.dashboard.view import activity_status

router = APIRouter()


def _policy_settings(sched: Any) -> dict:
    cfg = sched.config
    out = asdict(cfg) if is_dataclass(cfg) else {}
    prefix = f"{sched.name}_"   # each policy's own settings are named after it (SchedulerConfig)
    # The shared limits plus the active policy's own fields; other policies' fields are noise here.
    keep = ("policy", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size", "num_kv_blocks",
            "max_waiting", "enable_prefix_caching")
    return {k: v for k, v in out.items() if k in keep or k.startswith(prefix)}


def build_status(state: Any, controller: Any = None, monitor: Monitor | None = None,
                 tracker: Any = None) -> dict:
    sched = state.engine.core.scheduler
    kv = sched.kv
    resources = monitor.sample().to_dict() if monitor is not None else None
    body: dict[str, Any] = {
        "model": state.model_name,
        "device": getattr(state.loaded, "device", None),
        "dtype": getattr(state.loaded, "dtype", None),
        "representation": getattr(state.loaded, "representation", None),
        "resources": resources,
        "probe_problems": monitor.problems if monitor is not None else None,
        "queues": {"running": sched.num_running, "waiting": sched.num_waiting,   # waiting counts the parked too
                   "parked": len(sched.parked),
                   "kv_cache_usage": kv.usage, "kv_blocks_total": kv.num_blocks},
        "prefix_cache": ({"hit_rate": kv.hit_rate, "hit_tokens": kv.hit_tokens, "lookup_tokens": kv.lookup_tokens,
                          "cached_blocks": kv.num_cached_blocks} if hasattr(kv, "hit_rate") else None),
        "policy": {"name": sched.name, "settings": _policy_settings(sched)},
        "latency_model": state.metrics.latency_audit.status(sched.latency),
        "controller": controller.status() if controller is not None else None,
    }
    if controller is not None:
        body["latency_model"]["calibrations"] = [d for d in controller.decisions if d["kind"] == "calibrate"][-10:]
    tracker = tracker if tracker is not None else getattr(controller, "tracker", None)
    body["classes"] = tracker.summary() if tracker is not None else {}
    # The dashboard's history (sliceserve.server.dashboard): iterations, decode mask, refusals; None without it.
    body["activity"] = activity_status(state, state.engine.clock())
    return body


@router.get("/v1/status")
async def status(http: HTTPRequest) -> dict:
    app_state = http.app.state
    return build_status(app_state.serving, getattr(app_state, "controller", None),
                        getattr(app_state, "monitor", None), getattr(app_state, "latency_tracker", None))
