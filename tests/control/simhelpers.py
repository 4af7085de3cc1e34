"""Shared simulation set-up for the controller tests and benchmark figures (seeded, virtual time).

The controller joins the simulator exactly as it joins the server: through the server's own wiring
(`attach_control`: an engine observer and an admission hook), here on the simulator's hooks."""
from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from sliceserve.config import SchedulerConfig
from sliceserve.control.controller import Controller, ControllerConfig
from sliceserve.server.control import attach_control
from sliceserve.core.latency import load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.metrics.request_metrics import request_metrics
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.slo import SLO, SLOClass
from sliceserve.workload.lengths import parse_length_dist
from sliceserve.workload.presets import generate
from sliceserve.workload.spec import ClassMix, to_requests


def mix(*classes: tuple[str, float, SLO, float, str, str]) -> tuple[ClassMix, ...]:
    return tuple(ClassMix(SLOClass(n, slo, u), w, parse_length_dist(p), parse_length_dist(o))
                 for n, w, slo, u, p, o in classes)


# Real-time (SLICE's TPOT 50 ms, utility 100) beside a low-value class, on the paper's device table.
RT_MIX = mix(("realtime", 0.3, SLO(0.5, 0.05), 100.0, "uniform:32:128", "uniform:32:64"),
             ("nrt", 0.7, SLO(2.0, 0.25), 1.0, "uniform:128:256", "uniform:64:128"))


def attach_controller(sim: Simulator, config: ControllerConfig, class_constraints=None,
                      registry: CollectorRegistry | None = None) -> Controller:
    """Wire a controller into `sim` with the code the server runs (`create_app` -> `attach_control`); its
    Prometheus series go to `registry`."""
    registry = registry if registry is not None else CollectorRegistry()
    state = SimpleNamespace(engine=sim, metrics=SimpleNamespace(registry=registry))
    return attach_control(FastAPI(), state, config, class_constraints=class_constraints)


def simulate(workload_mix, rate: float, duration_s: float, seed: int, policy: str = "slice",
             controller: ControllerConfig | None = None, slowdown_at: float | None = None,
             slowdown: float = 1.3, class_constraints=None, noise: float = 0.05, scheduler: dict | None = None,
             registry: CollectorRegistry | None = None):
    wl = generate("test", rate, duration_s, seed, mix=workload_mix)
    reqs = to_requests(wl.specs, wl.classes)
    lat = load_profile("paper-4060ti")
    sched = make_scheduler(policy, SchedulerConfig(policy=policy, **(scheduler or {})), lat.copy())
    ex = SimulatedExecutor(lat.copy(), noise=noise, seed=seed)
    sim = Simulator(EngineCore(sched, ex), max_time_s=duration_s * 3)
    ctl = None if controller is None else attach_controller(sim, controller, class_constraints, registry)
    sim.add_arrivals(reqs)
    if slowdown_at is not None:
        sim.at(slowdown_at, lambda now: setattr(ex, "slowdown", slowdown))
    return sim.run(), ctl


def attainment(requests, slo_class: str, since_s: float = 0.0, until_s: float = float("inf")) -> float:
    met = [request_metrics(r).met for r in requests if r.slo_class == slo_class and since_s <= r.arrival_s < until_s]
    return sum(met) / len(met)


def recovery_cycles(ctl: Controller, slo_class: str, since_s: float, settle: int = 3) -> int | None:
    """Control cycles from the class's first at-risk cycle after `since_s` until it was first not at risk
    for `settle` cycles in a row (0: never at risk after `since_s`; None: never recovered)."""
    cycles = [h.get(slo_class, (False, None))[0] for t, h in ctl.history if t >= since_s]
    if True not in cycles:
        return 0
    cycles = cycles[cycles.index(True):]
    streak = 0
    for i, at_risk in enumerate(cycles):
        streak = 0 if at_risk else streak + 1
        if streak == settle:
            return i + 1 - settle
    return None
