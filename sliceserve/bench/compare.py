"""Run several policies on one workload in the simulator, each on identical arrivals.

Every policy gets fresh `Request` objects, a fresh copy of the latency model for its scheduler (policies
refine theirs online) and a separate fresh copy for the simulated device, whose noise stream is seeded
the same way for every policy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.metrics import makespan_s, request_metrics, summarize, summarize_by_class
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.workload import Workload, to_requests


@dataclass(frozen=True)
class SimSettings:
    config: SchedulerConfig
    profile: str = "paper-4060ti"           # built-in name or JSON file (sliceserve.core.latency.load_profile)
    noise: float = 0.0                      # sigma of the lognormal factor on each iteration time
    seed: int = 0                           # seeds the device noise
    max_time_s: float | None = None         # unfinished requests are aborted here (count as missed)
    include_requests: bool = True           # per-request records in the result
    # `profile` parsed once per run (given, or loaded here), never per policy x rate: every simulation takes
    # fresh copies of it, so this one is never changed by a run.
    latency: LatencyModel | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.latency is None:
            object.__setattr__(self, "latency", load_profile(self.profile))

    def describe(self) -> dict:
        scheduler = asdict(self.config)
        del scheduler["policy"]  # each result names its own policy
        return {
            "profile": self.profile, "profile_model": self.latency.to_dict(), "noise": self.noise,
            "seed": self.seed, "max_time_s": self.max_time_s, "scheduler": scheduler,
        }


def run_policy(policy: str, workload: Workload, settings: SimSettings) -> dict:
    """{"summary": {...}, "per_class": {CLASS: {...}}, ["requests": [...]]} for one policy."""
    config = replace(settings.config, policy=policy).validate()
    scheduler = make_scheduler(policy, config, settings.latency.copy())
    executor = SimulatedExecutor(settings.latency.copy(), settings.noise, settings.seed)
    sim = Simulator(EngineCore(scheduler, executor), max_time_s=settings.max_time_s)
    sim.add_arrivals(to_requests(workload.specs, workload.classes))
    result = sim.run()
    metrics = [request_metrics(r) for r in result.requests]
    span = makespan_s(metrics)
    summary = summarize(metrics, span)
    summary.update(num_iterations=result.num_iterations, num_violation_risks=result.num_violation_risks,
                   sim_end_s=result.end_s)
    out = {"summary": summary, "per_class": summarize_by_class(metrics, span, workload.classes)}
    if settings.include_requests:
        out["requests"] = [m.to_record() for m in metrics]
    return out


def run_policies(policies: list[str], workload: Workload, settings: SimSettings,
                 on_done: Callable[[str], None] | None = None) -> dict[str, dict]:
    """run_policy for each name, in the given order; `on_done(policy)` after each (progress bars)."""
    results: dict[str, dict] = {}
    for policy in policies:
        results[policy] = run_policy(policy, workload, settings)
        if on_done is not None:
            on_done(policy)
    return results
