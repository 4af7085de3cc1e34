"""/v1/status `activity`: what the dashboard draws, checked without a browser (runs where Chromium is absent)."""
from __future__ import annotations

import httpx
import pytest

from sliceserve.server.dashboard.activity import ActivityRecorder
from tests.server.helpers import TINY_LATENCY, LiveServer, make_state, wait_until


def test_status_activity_records_iterations_refusals_and_counts(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory(), policy="slice")) as live:
        ok = [httpx.post(live.url + "/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": "count me", "max_tokens": 5, "ignore_eos": True, "slo_class": cls})
            for cls in ("realtime", "realtime", "batch")]
        refused = httpx.post(live.url + "/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": "too fast", "max_tokens": 5, "slo_class": "batch", "slo": {"tpot_ms": 0.001}})
        assert [r.status_code for r in ok] == [200, 200, 200] and refused.status_code == 400
        assert wait_until(lambda: httpx.get(live.url + "/v1/status").json()["activity"]["counts"]
                          .get("batch", {}).get("finished") == 1)
        act = httpx.get(live.url + "/v1/status").json()["activity"]
    met = sum(r.json()["slo_report"]["met"] for r in ok[:2])   # the verdicts the clients got
    assert act["counts"]["realtime"] == {"running": 0, "waiting": 0, "finished": 2, "met": met, "refused": 0}
    assert act["counts"]["batch"]["refused"] == 1
    [ref] = act["refusals"]
    assert ref["slo_class"] == "batch" and ref["status"] == 400 and ref["kind"] == "invalid"
    assert ref["message"] == refused.json()["error"]["message"] and ref["at_s"] <= act["now_s"]
    # Each request decoded 4 tokens after its prefill sampled the first: 12 decode cells in the mask.
    its = act["iterations"]
    assert sum(len(it["decode"]) for it in its) == 3 * 4
    assert sum(it["prefill_tokens"] for it in its) == sum(r.json()["usage"]["prompt_tokens"] for r in ok)
    ids = {rid for it in its for rid in it["decode"] + it["prefill"]}
    assert set(act["request_classes"]) == ids and set(act["request_classes"].values()) == {"realtime", "batch"}
    assert all(it["predicted_ms"] > 0 and it["measured_ms"] > 0 for it in its)
    assert [it["n"] for it in its] == list(range(1, len(its) + 1)) == list(range(1, act["num_iterations"] + 1))
    assert act["slo_classes"]["realtime"] == {"ttft_ms": 500.0, "tpot_ms": 50.0, "e2e_ms": None, "utility": 100.0}
    assert sorted(f["slo_class"] for f in act["finished"]) == ["batch", "realtime", "realtime"]


def test_iterations_carry_the_schedulers_prediction_made_before_it_learnt():
    from sliceserve.config import SchedulerConfig
    from sliceserve.core.policies import make_scheduler
    from sliceserve.engine.core import EngineCore
    from sliceserve.request import Request, SamplingParams
    from sliceserve.sim import SimulatedExecutor

    sched = make_scheduler("vllm", SchedulerConfig(policy="vllm"), TINY_LATENCY.copy())
    device = TINY_LATENCY.copy()
    device.scale(2.0)                                   # the device runs twice as slow as the model says
    core = EngineCore(sched, SimulatedExecutor(device))
    core.add_request(Request("a", list(range(20)), SamplingParams(max_tokens=3), 0.0), 0.0)
    recorder = ActivityRecorder()
    now = 0.0
    for _ in range(3):
        step = core.step(now)
        recorder.on_step(step, sched)
        now = step.end_s
    its = recorder.snapshot()["iterations"]
    assert its[0]["prefill"] == ["a"] and its[1]["decode"] == ["a"]
    # The first prediction is the model's before any calibration: half of what the device measured.
    assert its[0]["predicted_ms"] == pytest.approx(TINY_LATENCY.prefill_time(20) * 1e3)
    assert its[0]["measured_ms"] == pytest.approx(2 * its[0]["predicted_ms"])


def test_refusals_after_admission_carry_the_status_the_client_got():
    # A policy's refusal of an admitted request is answered 429 slo_infeasible (server/serving.py); only the
    # queue timeout is 503. The dashboard had listed both as queue timeouts.
    from sliceserve.request import FinishReason
    from tests.core.schedhelpers import make_request, scheduler

    sched = scheduler("vllm")
    refused, late = make_request("refused", 8, 4), make_request("late", 8, 4)
    for r in (refused, late):
        assert sched.add_request(r, 0.0)
    sched.reject(refused, 1.0, "TTFT: no first token within 1 s; retry later")
    sched.abort("late", 61.0, FinishReason.REJECTED, error="no first token within max_queue_time 60 s: retry later")
    recorder = ActivityRecorder()
    for r in (refused, late):
        recorder.on_finish(r)
    kinds = {x["req_id"]: (x["kind"], x["status"], x["message"]) for x in recorder.snapshot()["refusals"]}
    assert kinds == {"refused": ("slo_infeasible", 429, refused.error), "late": ("queue_timeout", 503, late.error)}
