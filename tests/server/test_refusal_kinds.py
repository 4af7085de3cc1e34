"""The live-fidelity benchmark names who refused each request from the refusal's own text: admission's three
messages as `make_admit` writes them (the overload one names "queued requests ahead", which a plain "queue" test
counted as a queue refusal in run 6 of docs/results/live-fidelity.md), the policy's and the queue timeout's as
core/policies/slice.py and engine/async_engine.py word them, and the SLO controller's load shedding."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from sliceserve.config import SchedulerConfig
from sliceserve.control.controller import Controller
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import make_scheduler
from sliceserve.request import Request, SamplingParams
from sliceserve.server.admission import make_admit
from sliceserve.slo import SLO

_spec = importlib.util.spec_from_file_location(
    "live_fidelity", Path(__file__).resolve().parents[2] / "benchmarks" / "live_fidelity.py")
live_fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(live_fidelity)

LAT = LatencyModel([0.05, 0.06, 0.07, 0.08], prefill_base_s=0.01, prefill_per_token_s=1e-3, name="test")


def _req(rid: str, slo: SLO) -> Request:
    return Request(rid, [1] * 200, SamplingParams(max_tokens=50, ignore_eos=True), 0.0, slo=slo)


def test_each_refuser_is_named_from_its_real_message():
    config = SchedulerConfig(policy="vllm").with_overrides(num_kv_blocks=512, block_size=16, max_model_len=1024)
    sched = make_scheduler("vllm", config, LAT.copy())
    sched.add_request(_req("a", SLO(ttft_s=5.0)), 0.0)
    overloaded = make_admit(max_waiting=64, overload="reject")(sched, _req("b", SLO(ttft_s=0.3)), 0.0)
    assert overloaded is not None and "queued requests ahead" in overloaded.message
    assert live_fidelity.refusal_kind(overloaded.message) == "admission"
    full = make_admit(max_waiting=1, overload="reject")(sched, _req("c", SLO(ttft_s=5.0)), 0.0)
    assert live_fidelity.refusal_kind(full.message) == "queue full"
    idle = make_admit(max_waiting=64, overload="reject")(sched, _req("d", SLO(ttft_s=0.001)), 0.0)
    assert live_fidelity.refusal_kind(idle.message) == "idle-infeasible"
    assert live_fidelity.refusal_kind("TTFT: no first token within 0.5 s; retry later") == "policy (ttft lost)"
    assert live_fidelity.refusal_kind("no first token within max_queue_time 60 s: the server is overloaded") \
        == "queue timeout"
    assert live_fidelity.refusal_kind("something new").startswith("other (")


def test_the_controllers_load_shedding_is_named_from_its_real_message():
    config = SchedulerConfig(policy="slice").with_overrides(num_kv_blocks=512, block_size=16, max_model_len=1024)
    controller = Controller(make_scheduler("slice", config, LAT.copy()))
    controller.shed_below = 2.0          # what its control cycle sets while a higher-value class is at risk
    low = _req("e", SLO(ttft_s=5.0))
    low.utility = 1.0
    message = controller.admission_error(low)
    assert message is not None
    assert live_fidelity.refusal_kind(message) == "controller shed"


def test_a_refusal_counts_false_against_several_replays_only_when_every_replay_met_it():
    refused = {"a", "b", "c"}
    one = {"a": True, "b": True, "c": False}
    two = {"a": True, "b": False, "c": False}
    assert live_fidelity.false_in_every(refused, [one]) == 2           # the single-replay count
    assert live_fidelity.false_in_every(refused, [one, two]) == 1      # "b" met in one replay only
    assert live_fidelity.false_in_every(refused, [one, {}]) == 0       # a request a replay never saw did not meet
