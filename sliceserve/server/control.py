"""Wiring the controller, monitor and /v1/status into a server app (one call from server/app.py).

The controller joins the AsyncEngine as a second observer (every step, every finished request) and in
front of its admission hook (load shedding); its predicted misses and knobs are exported on the app's own
Prometheus registry next to the vLLM-named metrics.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

from sliceserve.control.controller import Controller, ControllerConfig
from sliceserve.engine.async_engine import Rejection
from sliceserve.resources import Monitor
from sliceserve.server.observers import FanOut
from sliceserve.server.status import router
from sliceserve.slo import ConstraintSet


class _ControllerObserver:
    def __init__(self, controller: Controller, gauges: dict[str, Any]) -> None:
        self.controller = controller
        self.gauges = gauges

    def on_step(self, step, scheduler) -> None:
        for req in step.parked:   # the policy set it aside: a miss now, where `reject` would have refused it
            self.controller.observe_finished(req)
        before = self.controller.num_cycles
        self.controller.on_step(step.sched, step.output, step.end_s)
        if self.controller.num_cycles != before:
            st = self.controller.status()
            if st["slice_margin"] is not None:
                self.gauges["margin"].set(st["slice_margin"])
            self.gauges["shed"].set(st["shed_below_utility"])
            self.gauges["scale"].set(st["calibration_scale"])
            self.gauges["prefill"].set(st["latency_factors"]["prefill"])

    def on_finish(self, req) -> None:
        # Parked work was counted when the policy parked it, or never, as admission's refusals are not:
        # either way as `overload: reject` would count it, so the controller acts alike under both.
        if req.parked_s is None:
            self.controller.observe_finished(req)


def attach_control(app: Any, state: Any, config: ControllerConfig | None = None,
                   monitor: Monitor | None = None, class_constraints: dict[str, ConstraintSet] | None = None,
                   server_constraints: ConstraintSet | None = None) -> Controller:
    """Register the status router, a resource monitor and the feedback controller on `app`. A power target
    in `server_constraints` is read through the monitor (a no-op on devices without a power probe)."""
    engine = state.engine
    registry = state.metrics.registry
    misses = Counter("sliceserve:slo_predicted_miss", "Control cycles in which a class was predicted to miss "
                     "its SLO", ["slo_class"], registry=registry)
    gauges = {
        "margin": Gauge("sliceserve:controller_slice_margin", "SLICE cycle margin set by the controller",
                        registry=registry),
        "shed": Gauge("sliceserve:controller_shed_below_utility", "Arrivals with a lower utility are refused",
                      registry=registry),
        "scale": Gauge("sliceserve:controller_calibration_scale", "Latency model's online decode factor "
                       "(measured / profiled decode time)", registry=registry),
        "prefill": Gauge("sliceserve:latency_prefill_factor", "Latency model's online prefill factor "
                         "(measured / profiled prefill time)", registry=registry),
    }
    monitor = monitor if monitor is not None else Monitor()
    power = None
    if server_constraints is not None and server_constraints.get("power") is not None:
        power = lambda: monitor.sample().power_w  # noqa: E731 - read once per control cycle
    controller = Controller(engine.core.scheduler, config or ControllerConfig(), class_constraints=class_constraints,
                            server_constraints=server_constraints, power_reader=power,
                            on_predicted_miss=lambda cls: misses.labels(cls).inc())
    engine.observer = FanOut(engine.observer, _ControllerObserver(controller, gauges))
    inner = engine.admit

    def admit(sched, req, now):
        verdict = inner(sched, req, now) if inner is not None else None
        if verdict is None and not req.park_on_arrival:   # parked best effort takes nothing to shed
            why = controller.admission_error(req)
            if why is not None:
                return Rejection("overloaded", why, retry_after_s=1.0)
        return verdict

    engine.admit = admit
    app.state.controller = controller
    app.state.monitor = monitor
    app.include_router(router)
    return controller
