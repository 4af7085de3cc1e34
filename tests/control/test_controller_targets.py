"""The controller consumes the typed constraints of sliceserve.slo: percentile and mean latency targets over a
class's finished requests, each compared with what the rolling window measured."""
from __future__ import annotations

import pytest

from sliceserve.config import SchedulerConfig
from sliceserve.control.controller import Controller, ControllerConfig
from sliceserve.core.latency import load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.request import FinishReason, Request, RequestStatus, SamplingParams
from sliceserve.slo import parse_slo


def _finished(i: int, ttft_s: float) -> Request:
    req = Request(f"r{i}", [1, 2, 3], SamplingParams(max_tokens=2), arrival_s=float(i), slo_class="gold")
    req.token_times_s = [i + ttft_s, i + ttft_s + 0.01]
    req.output_token_ids = [5, 6]
    req.status, req.finish_reason, req.finished_s = RequestStatus.FINISHED, FinishReason.LENGTH, i + ttft_s + 0.01
    return req


def _verdict(expr: str, ttfts: list[float]) -> tuple[bool, str]:
    sched = make_scheduler("vllm", SchedulerConfig(policy="vllm"), load_profile("paper-4060ti"))
    ctl = Controller(sched, ControllerConfig(min_class_samples=5),
                     class_constraints={"gold": parse_slo(expr, "class").targets()})
    for i, t in enumerate(ttfts):
        ctl.observe_finished(_finished(i, t))
    ctl.cycle(100.0)
    st = ctl.classes["gold"]
    return st.at_risk, st.why


# Nine requests at 100 ms and one at 1 s: mean 190 ms, p90 100 ms, p99 1 s.
TTFTS = [0.1] * 9 + [1.0]


@pytest.mark.parametrize("expr, at_risk", [
    ("mean ttft <= 150ms", True), ("mean ttft <= 250ms", False),
    ("p99 ttft <= 500ms", True), ("p90 ttft <= 150ms", False),
])
def test_mean_and_percentile_targets_are_checked_against_the_window(expr, at_risk):
    risky, why = _verdict(expr, TTFTS)
    assert risky is at_risk, why
    assert (expr in why) is at_risk


def test_per_request_bounds_are_left_to_the_scheduler():
    assert parse_slo("ttft <= 50ms", "class").targets().constraints == ()
