"""AsyncEngine reads the clock once per pass and passes that time down: admission, the step, queue expiry
and the stall check of one pass all see the same `now` (issue 20)."""
from __future__ import annotations

import asyncio
import itertools

from sliceserve.core.latency import load_profile
from sliceserve.engine.async_engine import AsyncEngine, RequestStream
from sliceserve.engine.core import EngineCore
from sliceserve.sim import SimulatedExecutor
from tests.core.schedhelpers import make_request, scheduler


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def admit(self, _sched, _req, now: float):
        self.events.append(("admit", now))
        return None

    def on_step(self, step, _sched) -> None:
        self.events.append(("step", step.start_s))

    def on_finish(self, req) -> None:
        self.events.append(("finish", req.finished_s))


def _serve(max_tokens: int) -> tuple[_Recorder, list[float], object]:
    """One request through an engine whose clock advances by 1 s at every read."""
    reads = itertools.count(100)
    rec = _Recorder()
    sched = scheduler("vllm")
    core = EngineCore(sched, SimulatedExecutor(load_profile("paper-4060ti")))
    engine = AsyncEngine(core, admit=rec.admit, observer=rec, clock=lambda: float(next(reads)),
                         max_queue_time_s=1e9)
    req = make_request("r", 16, max_tokens, arrival_s=0.0)

    async def go() -> None:
        engine.start()
        try:
            stream = await engine.add_request(req)
            assert isinstance(stream, RequestStream)
            async for _ in stream:
                pass
        finally:
            await asyncio.to_thread(engine.shutdown)

    asyncio.run(go())
    return rec, req.token_times_s, req


def test_admission_and_the_first_step_share_one_now():
    rec, _, req = _serve(max_tokens=4)
    admit_now = next(t for kind, t in rec.events if kind == "admit")
    first_step = next(t for kind, t in rec.events if kind == "step")
    assert first_step == admit_now
    assert req.first_scheduled_s == admit_now


def test_busy_passes_read_the_clock_once_each():
    rec, times, req = _serve(max_tokens=6)
    steps = [t for kind, t in rec.events if kind == "step"]
    assert len(steps) >= 6
    # While the request runs the loop never idles: one read per pass means consecutive steps one second
    # apart on this clock (every extra read in a pass would widen the gap).
    assert [b - a for a, b in zip(steps, steps[1:])] == [1.0] * (len(steps) - 1)
    # Each token is stamped with its pass's time plus the modelled step seconds (< 1 s here).
    assert all(s < t < s + 1.0 for s, t in zip(steps, times))
    assert req.finish_reason is not None and req.finish_reason.value == "length"
