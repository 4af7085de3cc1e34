"""The wall-clock driver: every request completes, arrivals are honoured, and with a clock that advances
by each iteration's modelled time it reproduces the simulator exactly (same scheduler, same timestamps)."""
from __future__ import annotations

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import BUILTIN_PROFILES
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.engine.wallclock import WallClockDriver
from sliceserve.request import FinishReason, Request, SamplingParams
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.workload import generate, to_requests


class FakeClock:
    """Virtual time that moves only when the driver sleeps or the executor 'runs' an iteration."""

    def __init__(self) -> None:
        self.t = 100.0  # not 0: the driver must measure from its own start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class TimedExecutor:
    """A simulated executor whose iterations take their modelled time on the fake clock."""

    def __init__(self, clock: FakeClock, inner: SimulatedExecutor) -> None:
        self.clock, self.inner = clock, inner

    def execute(self, sched):
        out = self.inner.execute(sched)
        self.clock.t += out.elapsed_s
        return out


def _core(policy: str = "vllm", executor=None, **cfg) -> EngineCore:
    device = BUILTIN_PROFILES["paper-4060ti"]
    scheduler = make_scheduler(policy, SchedulerConfig(policy=policy, **cfg), device.copy())
    return EngineCore(scheduler, executor or SimulatedExecutor(device.copy()))


def _workload_requests(prefix: str) -> list[Request]:
    wl = generate("edge-mix", rate=3.0, duration_s=4.0, seed=7)
    return to_requests(wl.specs, wl.classes, prefix=prefix)


def test_fake_clock_run_matches_the_simulator_token_for_token():
    sim_reqs = _workload_requests("r")
    sim = Simulator(_core())
    sim.add_arrivals(sim_reqs)
    sim.run()

    clock = FakeClock()
    core = _core(executor=TimedExecutor(clock, SimulatedExecutor(BUILTIN_PROFILES["paper-4060ti"].copy())))
    wall_reqs = _workload_requests("r")
    result = WallClockDriver(core, clock=clock, sleep=clock.sleep).run(wall_reqs)

    assert len(result.requests) == len(sim_reqs) > 5
    for a, b in zip(sorted(sim_reqs, key=lambda r: r.req_id), sorted(result.requests, key=lambda r: r.req_id)):
        assert a.finish_reason is b.finish_reason is FinishReason.LENGTH
        assert len(b.token_times_s) == b.sampling_params.max_tokens
        assert max(abs(x - y) for x, y in zip(a.token_times_s, b.token_times_s)) < 1e-9
    assert result.num_iterations == len(result.iterations) == sim.core.num_iterations
    # It slept only while idle: never past an arrival, and never while something was runnable.
    assert clock.sleeps and all(s > 0 for s in clock.sleeps)


def test_real_clock_completes_every_request_and_respects_arrivals():
    reqs = [Request(f"q{i}", [1] * 8, SamplingParams(max_tokens=4, ignore_eos=True), arrival_s=0.03 * i)
            for i in range(5)]
    finished: list[str] = []
    freed: list[str] = []
    inner = SimulatedExecutor(BUILTIN_PROFILES["paper-4060ti"].copy())

    class Recording:
        def execute(self, sched):
            freed.extend(sched.finished)
            return inner.execute(sched)

    result = WallClockDriver(_core(executor=Recording()), on_finish=lambda r: finished.append(r.req_id)).run(reqs)
    assert sorted(finished) == sorted(r.req_id for r in reqs)
    for req in result.requests:
        assert req.finish_reason is FinishReason.LENGTH and req.num_output_tokens == 4
        assert req.first_scheduled_s >= req.arrival_s  # not added before its time came
    # The last arrival is at 0.12 s: the driver must have waited for it.
    assert result.end_s >= 0.12
    # Every ended request reached the executor's `finished` list (the last ones by the final flush step).
    assert sorted(freed) == sorted(finished)


def test_time_limit_aborts_what_is_left():
    reqs = [Request("early", [1] * 4, SamplingParams(max_tokens=2), arrival_s=0.0),
            Request("late", [1] * 4, SamplingParams(max_tokens=2), arrival_s=30.0)]
    clock = FakeClock()
    core = _core(executor=TimedExecutor(clock, SimulatedExecutor(BUILTIN_PROFILES["paper-4060ti"].copy())))
    result = WallClockDriver(core, clock=clock, sleep=clock.sleep).run(reqs, max_time_s=1.0)
    by_id = {r.req_id: r for r in result.requests}
    assert by_id["early"].finish_reason is FinishReason.LENGTH
    assert by_id["late"].finish_reason is FinishReason.ABORT and "time limit" in by_id["late"].error
    assert clock.t - 100.0 < 2.0  # it did not sleep until the late arrival


def test_rejected_requests_are_reported_finished():
    too_long = Request("big", [1] * 100, SamplingParams(max_tokens=10), arrival_s=0.0)
    seen: list[Request] = []
    result = WallClockDriver(_core(max_model_len=64), on_finish=seen.append).run([too_long])
    assert seen == [too_long] and result.requests[0].finish_reason is FinishReason.REJECTED
