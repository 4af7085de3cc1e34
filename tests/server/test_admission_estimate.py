"""The overload estimate behind `overload: reject`: under slice a request only counts work of at least its own
utility (SLICE serves by utility), under FCFS everything admitted is ahead of it."""
from __future__ import annotations

import re

import pytest

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import Request, SamplingParams
from sliceserve.server.admission import estimate_under_load, make_admit
from sliceserve.sim.executor import SimulatedExecutor
from sliceserve.slo import SLO

LAT = LatencyModel([0.05, 0.06, 0.07, 0.08], prefill_base_s=0.01, prefill_per_token_s=1e-3, name="test")


def _req(rid: str, utility: float, slo: SLO = SLO(), prompt: int = 200, arrival_s: float = 0.0) -> Request:
    return Request(rid, [1] * prompt, SamplingParams(max_tokens=32), arrival_s, slo=slo, utility=utility)


@pytest.mark.parametrize("policy", ["slice", "vllm"])
def test_low_value_backlog_delays_a_realtime_request_only_under_fcfs(policy):
    config = SchedulerConfig(policy=policy).with_overrides(num_kv_blocks=512, block_size=16, max_model_len=1024)
    sched = make_scheduler(policy, config, LAT.copy())
    for i in range(10):   # 2000 prompt tokens of best-effort work queued
        sched.add_request(_req(f"b{i}", 1.0), 0.0)
    rt = _req("rt", 100.0, SLO(ttft_s=1.0))
    est = estimate_under_load(sched, rt)
    alone = LAT.prefill_time(200)
    admit = make_admit(max_waiting=64, overload="reject")
    verdict = admit(sched, rt, 0.0)
    if policy == "slice":
        assert est.ttft_s == pytest.approx(alone, rel=0.2) and verdict is None
    else:
        assert est.ttft_s >= LAT.prefill_time(2200) and verdict is not None and verdict.kind == "overloaded"
    # A later best-effort arrival queues behind the backlog under either policy.
    assert estimate_under_load(sched, _req("b-new", 1.0, arrival_s=0.1)).ttft_s >= LAT.prefill_time(2200)


def test_admission_records_its_predictions_and_a_refusal_gives_its_parts():
    config = SchedulerConfig(policy="vllm").with_overrides(num_kv_blocks=512, block_size=16, max_model_len=1024)
    sched = make_scheduler("vllm", config, LAT.copy())
    admit = make_admit(max_waiting=64, overload="best_effort")
    first = _req("a", 1.0, SLO(ttft_s=5.0, tpot_s=1.0))
    assert admit(sched, first, 0.5) is None
    # Admitted half a second after arrival on an idle device: TTFT = the wait + its own prefill.
    assert first.predicted_ttft_s == pytest.approx(0.5 + LAT.prefill_time(200))
    assert first.predicted_tpot_s == pytest.approx(LAT.decode_time(1, 200))
    sched.add_request(first, 0.5)
    refuse = make_admit(max_waiting=64, overload="reject")
    late = _req("b", 1.0, SLO(ttft_s=0.3))
    verdict = refuse(sched, late, 0.0)
    assert verdict is not None and verdict.kind == "overloaded"
    assert "200 prompt tokens queued ahead + its own 200" in verdict.message
    assert late.predicted_ttft_s == pytest.approx(LAT.prefill_time(400))


def test_slice_estimate_follows_the_policy_order_and_admits_what_slice_serves_in_time():
    """Ten equal-utility prompts queued with long outputs: SLICE's order (utility, then utility per output token
    left) serves a short newcomer first, so its TTFT is its own prefill. Counting every queued prompt of at least
    its utility predicted 2.2 s > its 1 s bound and refused it (the live false refusals); the policy serves it in
    ~0.3 s."""
    config = SchedulerConfig(policy="slice").with_overrides(num_kv_blocks=1024, block_size=16, max_model_len=1024)
    sched = make_scheduler("slice", config, LAT.copy())
    for i in range(10):
        long = Request(f"q{i}", [1] * 200, SamplingParams(max_tokens=256, ignore_eos=True), 0.0,
                       slo=SLO(ttft_s=5.0, tpot_s=0.5), utility=100.0)
        sched.add_request(long, 0.0)
    short = Request("short", [2] * 200, SamplingParams(max_tokens=8, ignore_eos=True), 0.0,
                    slo=SLO(ttft_s=1.0, tpot_s=0.5), utility=100.0)
    verdict = make_admit(max_waiting=64, overload="reject")(sched, short, 0.0)
    assert verdict is None, verdict.message
    assert short.predicted_ttft_s == pytest.approx(LAT.prefill_time(200), rel=0.05)
    # What the policy then does: the newcomer's first token comes within its bound.
    core = EngineCore(sched, SimulatedExecutor(LAT))
    assert core.add_request(short, 0.0)
    now = 0.0
    while not short.output_token_ids:
        now += max(core.step(now).output.elapsed_s, 1e-3)
        assert now < 5.0
    assert short.token_times_s[0] <= 1.0
    # A newcomer with a longer output than the queued ones sorts after them: their prompts count.
    late = Request("late", [3] * 200, SamplingParams(max_tokens=512), 0.0, slo=SLO(ttft_s=1.0), utility=100.0)
    verdict = make_admit(max_waiting=64, overload="reject")(sched, late, now)
    assert verdict is not None and verdict.kind == "overloaded"
    assert "prompt tokens queued ahead" in verdict.message
    assert re.search(r"(\d+) of \1 queued requests ahead in slice's order", verdict.message)
