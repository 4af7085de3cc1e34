"""The queue limit (`max_queue_time_s`) never cuts off a request before its own TTFT bound: a request that
asked for its first token within 97 s (edge-mix's nrt-250 under a llama.cpp CPU server's SLO scale) waited
60 s and got 503 although its SLO could still be met (live-fidelity.md, llama.cpp run 3: two of the three
queue timeouts at 2x met their SLO in the best_effort replay)."""
from __future__ import annotations

from sliceserve.core.latency import load_profile
from sliceserve.engine.async_engine import AsyncEngine
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason
from sliceserve.sim import SimulatedExecutor
from sliceserve.slo import SLO
from tests.core.schedhelpers import make_request, scheduler


def _engine_with_waiting(*reqs) -> AsyncEngine:
    sched = scheduler("vllm")
    engine = AsyncEngine(EngineCore(sched, SimulatedExecutor(load_profile("paper-4060ti"))), max_queue_time_s=60.0)
    for r in reqs:
        assert sched.add_request(r, r.arrival_s)
    return engine


def test_a_request_waits_until_its_ttft_bound_when_that_is_longer_than_the_queue_limit():
    long_ttft = make_request("long", 16, 4, slo=SLO(ttft_s=97.0))
    plain = make_request("plain", 16, 4)                       # no TTFT: the queue limit alone
    short_ttft = make_request("short", 16, 4, slo=SLO(ttft_s=5.0))   # shorter TTFT: the queue limit still
    engine = _engine_with_waiting(long_ttft, plain, short_ttft)
    sched = engine.core.scheduler

    engine._expire_waiting(61.0)
    assert plain.finish_reason is FinishReason.REJECTED and "max_queue_time 60 s" in plain.error
    assert short_ttft.finish_reason is FinishReason.REJECTED
    assert long_ttft.finish_reason is None and "long" in sched.requests   # its SLO can still be met

    engine._expire_waiting(97.5)
    assert long_ttft.finish_reason is FinishReason.REJECTED
    assert "its TTFT bound of 97 s (longer than max_queue_time 60 s)" in long_ttft.error
    assert not sched.requests
