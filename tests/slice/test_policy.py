"""The `slice` policy end to end on the simulator (same EngineCore, virtual clock)."""
from __future__ import annotations

import pytest

from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, RequestStatus
from sliceserve.sim import SimulatedExecutor, Simulator
from tests.slice.conftest import make_req, make_slice


def run(sched, reqs, device: LatencyModel, max_time_s: float = 300.0, slowdown: float = 1.0):
    executor = SimulatedExecutor(device)
    executor.slowdown = slowdown
    core = EngineCore(sched, executor)
    sim = Simulator(core, max_time_s=max_time_s)
    sim.add_arrivals(reqs)
    return sim.run()


def tpot(req):
    t = req.token_times_s
    return (t[-1] - t[0]) / (len(t) - 1)


@pytest.mark.parametrize("layout", ["prefix", "spread", "nested"])
def test_selected_requests_meet_tpot_with_an_exact_model(paper, layout):
    # Three real-time streams plus a stream of non-real-time work that overloads the device.
    rts = [make_req(f"rt{i}", arrival=0.2 * i, prompt=128, max_tokens=60) for i in range(3)]
    nrt = [make_req(f"n{i}", arrival=0.05 * i, prompt=256, max_tokens=80, tpot=0.1, ttft=1.0, utility=1.0,
                    cls="nrt") for i in range(40)]
    sched = make_slice(paper.copy(), slice_layout=layout)
    res = run(sched, rts + nrt, load_profile("paper-4060ti"))
    for r in rts:
        assert r.finish_reason is FinishReason.LENGTH and r.num_output_tokens == 60
        assert r.ttft_s <= 0.5
        assert tpot(r) <= 0.05, (r.req_id, tpot(r))
    assert all(r.finish_reason is FinishReason.LENGTH for r in nrt)   # best effort still finishes all
    assert res.num_iterations > 0


def test_higher_density_arrival_displaces_then_resumes_without_losing_tokens():
    # Alone, the real-time stream costs 20 * 46 ms = 0.92 s per cycle; any second row costs +154 ms.
    lat = LatencyModel([0.046, 0.2], prefill_base_s=0.001)
    low = make_req("low", arrival=0.0, prompt=64, max_tokens=50, tpot=0.1, ttft=1.0, utility=1.0, cls="nrt")
    high = make_req("high", arrival=1.0, prompt=64, max_tokens=40)
    sched = make_slice(lat.copy())
    seen: dict[str, object] = {}
    core = EngineCore(sched, SimulatedExecutor(lat))
    sim = Simulator(core, max_time_s=60)
    sim.add_arrivals([low, high])

    def probe(now):
        seen["status"] = low.status
        seen["tokens"] = low.num_output_tokens
        seen["blocks"] = sched.kv.num_blocks_held("low")
    sim.at(1.5, probe)
    sim.run()
    assert seen["status"] is RequestStatus.PAUSED and seen["blocks"] > 0 and 0 < seen["tokens"] < 50
    paused_tokens = [t for t in low.token_times_s if high.token_times_s[0] < t < high.token_times_s[-1]]
    assert paused_tokens == []                       # nothing for "low" while "high" streams
    assert high.ttft_s <= 0.5 and tpot(high) <= 0.05
    assert low.finish_reason is FinishReason.LENGTH and low.num_output_tokens == 50
    assert low.num_preemptions >= 1 and low.token_times_s[-1] > high.token_times_s[-1]


def test_device_slower_than_model_triggers_drift_and_risk(paper):
    reqs = [make_req(f"rt{i}", arrival=0.1 * i, prompt=64, max_tokens=200) for i in range(3)]
    model = paper.copy()
    sched = make_slice(model)
    res = run(sched, reqs, load_profile("paper-4060ti"), slowdown=1.6)
    assert sched.feedback.num_drifts > 0
    assert res.num_violation_risks > 0
    assert model.decode_time(3) > 1.4 * paper.decode_time(3)     # the EWMA learnt the slower device


def test_without_feedback_no_drift_is_reported(paper):
    reqs = [make_req(f"rt{i}", arrival=0.1 * i, prompt=64, max_tokens=100) for i in range(3)]
    sched = make_slice(paper.copy(), slice_feedback=False)
    run(sched, reqs, load_profile("paper-4060ti"), slowdown=1.4)
    assert sched.feedback.num_drifts == 0


def test_abort_and_finish_trigger_rebuilds(paper):
    sched = make_slice(paper.copy())
    a, b = make_req("a"), make_req("b", arrival=0.0)
    sched.add_request(a, 0.0)
    sched.add_request(b, 0.0)
    sched.schedule(0.0)
    rebuilds = sched.num_rebuilds
    sched.schedule(0.01)
    assert sched.num_rebuilds == rebuilds             # lazy: nothing changed
    sched.abort("a", 0.02)
    sched.schedule(0.03)
    assert sched.num_rebuilds == rebuilds + 1 and "a" not in sched.selection.mask.rows


def test_memory_pressure_evicts_paused_lowest_density_first():
    lat = LatencyModel([0.046, 0.2], prefill_base_s=0.001)
    # KV for ~2 requests: the displaced low-utility request must give its blocks back (recompute).
    sched = make_slice(lat.copy(), num_kv_blocks=12, block_size=16)
    low = make_req("low", arrival=0.0, prompt=64, max_tokens=100, tpot=0.1, ttft=1.0, utility=1.0, cls="nrt")
    high = make_req("high", arrival=1.0, prompt=64, max_tokens=100)
    res = run(sched, [low, high], lat, max_time_s=120)
    assert high.finish_reason is FinishReason.LENGTH and tpot(high) <= 0.05
    assert low.finish_reason is FinishReason.LENGTH and low.num_output_tokens == 100
    assert res.num_preemptions >= 1
