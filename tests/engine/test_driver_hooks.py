"""The simulator calls the admission hook and the observer as the server's AsyncEngine does, so what the
server plugs in (the controller, `attach_control`) is what the simulator-based tests run."""
from __future__ import annotations

from sliceserve.core.latency import BUILTIN_PROFILES
from sliceserve.engine.core import EngineCore
from sliceserve.engine.hooks import Rejection
from sliceserve.request import FinishReason, SamplingParams, Request
from sliceserve.server.admission import make_admit
from sliceserve.sim import SimulatedExecutor, Simulator
from tests.core.schedhelpers import scheduler


def test_simulator_asks_admit_and_tells_the_observer_like_the_server():
    device = BUILTIN_PROFILES["paper-4060ti"]
    sim = Simulator(EngineCore(scheduler("vllm", latency=device.copy()), SimulatedExecutor(device.copy())))
    reqs = [Request(f"r{i}", [1] * 8, SamplingParams(max_tokens=3), arrival_s=0.5 * i) for i in range(4)]
    asked, finished, steps = [], [], []

    def admit(sched, req, now):
        asked.append((req.req_id, now))
        return Rejection("overloaded", "not now") if req.req_id == "r2" else None

    class Observer:
        def on_step(self, step, sched):
            steps.append((step.start_s, [r.req_id for r in step.finished]))

        def on_finish(self, req):
            finished.append(req.req_id)

    sim.admit, sim.observer = admit, Observer()
    sim.add_arrivals(reqs)
    sim.run()
    assert asked == [(r.req_id, r.arrival_s) for r in reqs]
    assert (reqs[2].finish_reason, reqs[2].error, reqs[2].finished_s) == (FinishReason.REJECTED, "not now", 1.0)
    assert reqs[2].first_scheduled_s is None
    # Every admitted request's end is told once, as the step that ended it reports it.
    assert sorted(finished) == ["r0", "r1", "r3"]
    assert [rid for _, ended in steps for rid in ended] == finished
    assert all(r.finish_reason is FinishReason.LENGTH for r in reqs if r.req_id != "r2")


def test_simulator_keeps_the_servers_waiting_queue_rules():
    """A full queue displaces its least valuable unstarted request for a newcomer worth more, and a request still
    without its first token past `max_queue_time_s` is refused: as on the server (`engine/door.py`), so the
    offline stand-in for it (benchmarks/admission_fidelity.py) turns work away as the live server does."""
    device = BUILTIN_PROFILES["paper-4060ti"]
    sched = scheduler("vllm", latency=device.copy(), max_num_seqs=1)
    sim = Simulator(EngineCore(sched, SimulatedExecutor(device.copy())), max_queue_time_s=1.0)
    # r0 holds the only sequence slot for ~2.8 s (200 decode steps); r1 and r2 queue behind it.
    busy = Request("r0", [1] * 8, SamplingParams(max_tokens=200), arrival_s=0.0)
    low = Request("r1", [1] * 8, SamplingParams(max_tokens=3), arrival_s=0.1)
    high = Request("r2", [1] * 8, SamplingParams(max_tokens=3), arrival_s=0.2, utility=100.0)
    waiting_next = Request("r3", [1] * 8, SamplingParams(max_tokens=3), arrival_s=0.3)
    finished = []

    class Observer:
        def on_step(self, step, sched):
            pass

        def on_finish(self, req):
            finished.append(req.req_id)

    sim.admit, sim.observer = make_admit(max_waiting=1, overload="best_effort"), Observer()
    sim.add_arrivals([busy, low, high, waiting_next])
    sim.run()
    # r2 (utility 100) took r1's place in the full queue; r3, worth no more than r2, was refused at the door.
    assert low.finish_reason is FinishReason.REJECTED and "displaced from the full waiting queue" in low.error
    assert 0.2 <= low.finished_s < 0.25   # arrivals are seen between steps
    assert waiting_next.finish_reason is FinishReason.REJECTED and "waiting queue is full" in waiting_next.error
    # r2 waited past the 1 s queue limit behind r0 and was refused then, with the server's words.
    assert high.finish_reason is FinishReason.REJECTED and "no first token within max_queue_time 1 s" in high.error
    assert 1.2 < high.finished_s < 1.3
    assert busy.finish_reason is FinishReason.LENGTH
    # Each admitted request's end is told once; the door's refusal (r3) never entered.
    assert sorted(finished) == ["r0", "r1", "r2"]
