"""The simulator calls the admission hook and the observer as the server's AsyncEngine does, so what the
server plugs in (the controller, `attach_control`) is what the simulator-based tests run."""
from __future__ import annotations

from sliceserve.core.latency import BUILTIN_PROFILES
from sliceserve.engine.core import EngineCore
from sliceserve.engine.hooks import Rejection
from sliceserve.request import FinishReason, SamplingParams, Request
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
