"""The live-fidelity benchmark names who refused each request from the refusal's own text: admission's three
messages as `make_admit` writes them (the overload one names "queued requests ahead", which a plain "queue" test
counted as a queue refusal in run 6 of docs/results/live-fidelity.md), the policy's and the queue timeout's as
core/policies/slice.py and engine/async_engine.py word them, and the SLO controller's load shedding."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sliceserve.config import SchedulerConfig
from sliceserve.control.controller import Controller
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import make_scheduler
from sliceserve.core.scheduler import Scheduler
from sliceserve.request import FinishReason, Request, SamplingParams
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


def _rec(t: float, kind: str, ratio: float) -> tuple:
    return (t, kind, ratio, 1.0, 1, 0, 0.0, 0.0)


def test_the_settle_time_is_when_the_servers_rolling_error_is_back_within_bounds_for_good():
    # Ten decode iterations a second, exact but 50% slow-predicted from 10 s to 20 s; one exact prefill a second.
    # Over a rolling window of 22 iterations the decode error is out of bounds until the slow ones are under a
    # tenth of the window (p90), two seconds after the second change.
    records = sorted([_rec(i / 10, "decode", 1.5 if 10 <= i / 10 < 20 else 1.0) for i in range(400)]
                     + [_rec(i / 10 + 0.05, "prefill", 1.0) for i in range(0, 400, 10)], key=lambda r: r[0])
    slow, fast = live_fidelity.settle_lines(records, [("slow", 10.0), ("fast", 20.0)], 39.0, window=22)
    assert "decode within bounds for good not" in slow          # still 50% off when the next change comes
    assert "decode within bounds for good +2 s" in fast
    assert "prefill-bearing within bounds for good at once" in fast
    assert "worst median from +30 s" not in slow                # 10 s to the next change: no reading 30 s on


def test_seconds_whose_window_holds_no_iteration_of_a_kind_are_not_counted_out_of_bounds():
    # Live run 15: after the competitor stopped the load drained, the last 512 iterations became all decodes, and
    # the prefill-bearing cell read "not" although every second that held a prompt chunk was within the bounds.
    records = sorted([_rec(i / 10, "decode", 1.0) for i in range(400)]
                     + [_rec(i + 0.05, "prefill", 1.0) for i in range(0, 25)], key=lambda r: r[0])
    (line,) = live_fidelity.settle_lines(records, [("stopped", 10.0)], 39.0, window=22)
    assert "prefill-bearing within bounds for good at once" in line
    assert "decode within bounds for good at once" in line


def test_queue_timeouts_are_named_from_the_engines_own_messages():
    # Both wordings the engine writes: the plain limit, and a request's own TTFT bound where that is longer.
    from sliceserve.engine.async_engine import AsyncEngine
    from sliceserve.engine.core import EngineCore
    from sliceserve.sim import SimulatedExecutor

    config = SchedulerConfig(policy="vllm").with_overrides(num_kv_blocks=512, block_size=16, max_model_len=1024)
    sched = make_scheduler("vllm", config, LAT.copy())
    engine = AsyncEngine(EngineCore(sched, SimulatedExecutor(LAT.copy())), max_queue_time_s=60.0)
    plain, long_ttft = _req("plain", SLO()), _req("long", SLO(ttft_s=97.0))
    for r in (plain, long_ttft):
        assert sched.add_request(r, 0.0)
    engine._expire_waiting(98.0)
    assert "TTFT bound" in long_ttft.error and "TTFT bound" not in plain.error
    assert [live_fidelity.refusal_kind(r.error) for r in (plain, long_ttft)] == ["queue timeout", "queue timeout"]


def test_the_replays_own_disagreement_counts_the_first_replays_misses_that_the_second_met():
    first = {"a": False, "b": False, "c": True, "d": False}
    second = {"a": True, "b": False, "c": False}      # "d" never reached the second replay: not a meet
    assert live_fidelity.replay_flips(first, second) == (3, 1)
    assert live_fidelity.replay_flips({"a": True}, {"a": False}) == (0, 0)


def test_the_replay_lines_report_every_phase():
    phases = [{"name": "1x", "refused": {"a"}, "false_in_every": 1, "attainment": 0.5},
              {"name": "2x", "refused": set(), "false_in_every": 0, "attainment": 0.25}]
    one = {1.0: {"a": True, "b": False}, 2.0: {"c": False, "d": False}}
    two = {1.0: {"a": True, "b": True}, 2.0: {"c": True, "d": False}}
    text = "\n".join(live_fidelity.replay_lines(phases, [1.0, 2.0], [one, two]))
    assert "1x 1 / 1; 2x 0 / 0" in text
    assert "1x 1 / 1 (100%); 2x 1 / 2 (50%)" in text
    assert "1x 0.500 vs 0.500; 2x 0.250 vs 0.000" in text
    alone = "\n".join(live_fidelity.replay_lines(phases, [1.0, 2.0], [one]))
    assert "disagreement" not in alone and "1x 0.500 vs 0.500" in alone


def test_scorpios_refusal_of_the_unattainable_is_the_policys_not_the_doors():
    """SCORPIO refuses queued requests whose first token it predicts after their TTFT (core/policies/scorpio.py);
    its message carries the scheduler's SLO-refusal prefix, which alone reads as admission's."""
    config = SchedulerConfig(policy="scorpio").with_overrides(num_kv_blocks=512, block_size=16, max_model_len=1024)
    sched = make_scheduler("scorpio", config, LAT.copy())
    a, b = _req("a", SLO(ttft_s=0.3)), _req("b", SLO(ttft_s=0.35))
    sched.add_request(a, 0.0)
    sched.add_request(b, 0.0)     # least deadline first: behind a's 200-token prompt, ~0.42 s to its first token
    sched.schedule(0.0)
    messages = {r.error for r in (a, b) if r.error}
    assert messages, "scorpio refused nothing"
    assert {live_fidelity.refusal_kind(m) for m in messages} == {"policy (ttft predicted)"}


class _IdleServer:
    """A fake /v1/status on a fake clock: its drift re-checks leave `pending` one by one, one every `each_s`
    seconds from `first_s` on."""

    def __init__(self, pending: list[str], first_s: float, each_s: float) -> None:
        self.t, self.pending, self.first_s, self.each_s = 0.0, pending, first_s, each_s
        self.reads = 0

    def sleep(self, s: float) -> None:
        self.t += s

    def status(self) -> dict:
        self.reads += 1
        done = 0 if self.t < self.first_s else 1 + int((self.t - self.first_s) // self.each_s)
        left = self.pending[done:]
        return {"latency_model": {"prefill_256_ms": 300.0 if left else 250.0, "drift": {"pending": left}}}


def test_the_rested_reading_waits_for_the_pending_rechecks_but_not_forever():
    # llama.cpp run 6: both re-checks still pending at 10 s; the reading now comes once they have run.
    srv = _IdleServer(["decode", "prefill"], first_s=11.0, each_s=6.0)
    rested = live_fidelity.rested_status(srv.status, 10.0, 60.0, clock=lambda: srv.t, sleep=srv.sleep)
    assert rested["drift"]["pending"] == [] and rested["prefill_256_ms"] == 250.0
    assert rested["rested_s"] == 17.0
    # Nothing pending: read once, right after the idle seconds.
    srv = _IdleServer([], first_s=0.0, each_s=1.0)
    rested = live_fidelity.rested_status(srv.status, 10.0, 60.0, clock=lambda: srv.t, sleep=srv.sleep)
    assert (srv.reads, rested["rested_s"]) == (1, 10.0)
    # A re-check that never runs: read at idle + settle seconds, still pending, and said so.
    srv = _IdleServer(["prefill"], first_s=1e9, each_s=1.0)
    rested = live_fidelity.rested_status(srv.status, 10.0, 5.0, clock=lambda: srv.t, sleep=srv.sleep)
    assert rested["drift"]["pending"] == ["prefill"] and rested["rested_s"] == 15.0


def test_each_request_row_carries_its_prediction_its_refusal_and_every_replays_verdict():
    served = _req("a", SLO(ttft_s=1.0))
    served.predicted_ttft_s, served.predicted_tpot_s = 0.4, 0.05
    refused = _req("b", SLO(ttft_s=1.0))
    Scheduler.end_unadmitted(refused, FinishReason.REJECTED, 2.0, "TTFT: no first token within 1 s")
    rows = live_fidelity.request_rows({0.5: [served], live_fidelity.CONTENTION: [refused]},
                                      [{0.5: {"a": True}, live_fidelity.CONTENTION: {"b": True}},
                                       {0.5: {"a": False}, live_fidelity.CONTENTION: {"b": True}}])
    by_id = {r["req_id"]: r for r in rows}
    assert by_id["a"]["phase"] == "0.5x" and by_id["b"]["phase"] == live_fidelity.CONTENTION
    assert (by_id["a"]["predicted_ttft_s"], by_id["a"]["slo"]["ttft_s"]) == (0.4, 1.0)
    assert by_id["a"]["met_in_replays"] == [True, False] and by_id["b"]["met_in_replays"] == [True, True]
    assert by_id["b"]["finish_reason"] == "rejected" and "no first token" in by_id["b"]["error"]
    json.dumps(rows)   # the file is JSON lines


def test_the_rolling_window_is_capped_in_time_as_the_servers_is():
    # Ten decode iterations a second, 50% slow-predicted from 10 s to 20 s. Over the last 512 iterations (51 s
    # here, as on a 2-vCPU CPU) the slow stretch keeps the p90 out of bounds for 46 s after the change; over the server's
    # 20 s the window's p90 is back once fewer than a tenth of its iterations are slow, 18 s after the change.
    records = [_rec(i / 10, "decode", 1.5 if 10 <= i / 10 < 20 else 1.0) for i in range(700)]
    (by_count,) = live_fidelity.settle_lines(records, [("fast", 20.0)], 69.0, window=512, window_s=1e9)
    (by_time,) = live_fidelity.settle_lines(records, [("fast", 20.0)], 69.0, window=512, window_s=20.0)
    assert "decode within bounds for good +46 s" in by_count
    assert "decode within bounds for good +18 s" in by_time
