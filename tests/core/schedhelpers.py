"""Helpers for CPU-only scheduler tests: hand-made requests and hand-made ModelOutputs (vLLM v1 style)."""
from __future__ import annotations

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.policies import make_scheduler
from sliceserve.core.scheduler import Scheduler
from sliceserve.request import Request, SamplingParams
from sliceserve.slo import SLO

TOKEN = 7


def make_request(rid: str, prompt_len: int, max_tokens: int, arrival_s: float = 0.0, priority: int = 0,
                 slo: SLO | None = None, **params) -> Request:
    return Request(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, **params),
                   arrival_s=arrival_s, priority=priority, slo=slo or SLO())


def scheduler(policy: str, latency: LatencyModel | None = None, **config) -> Scheduler:
    sched = make_scheduler(policy, SchedulerConfig(policy=policy, **config), latency or load_profile("paper-4060ti"))
    sched.check_invariants = True
    return sched


def step(sched: Scheduler, now: float, elapsed_s: float = 0.1, token: int = TOKEN,
         stopped: set[str] | None = None) -> tuple[SchedulerOutput, list[Request]]:
    """One iteration with a hand-made ModelOutput: every request whose computation reaches its end
    samples `token`; the iteration takes `elapsed_s`."""
    out = sched.schedule(now)
    sampled = {rid: token for rid in out.requests if out.samples(rid)}
    ended = sched.update(out, ModelOutput(sampled=sampled, elapsed_s=elapsed_s, stopped=stopped or set()),
                         now + elapsed_s)
    return out, ended
