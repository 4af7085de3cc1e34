"""Best effort set aside (`Scheduler.park`): a parked request holds no queue place and no KV, the policy does
not see it, and it runs only once nothing else is waiting or running."""
from __future__ import annotations

from sliceserve.core.latency import BUILTIN_PROFILES
from sliceserve.core.outputs import ModelOutput
from sliceserve.engine.core import EngineCore
from sliceserve.engine.door import end_late, late_requests
from sliceserve.request import FinishReason, Request, RequestStatus, SamplingParams
from sliceserve.sim import SimulatedExecutor, Simulator
from tests.core.schedhelpers import scheduler


def _req(rid: str, arrival: float, max_tokens: int = 5, **kw) -> Request:
    return Request(rid, [1] * 16, SamplingParams(max_tokens=max_tokens), arrival_s=arrival, **kw)


def test_a_request_parked_on_arrival_runs_only_once_the_device_has_nothing_else():
    device = BUILTIN_PROFILES["paper-4060ti"]
    sched = scheduler("vllm", latency=device.copy())
    sim = Simulator(EngineCore(sched, SimulatedExecutor(device.copy())))
    busy = [_req(f"b{i}", 0.1 * i, max_tokens=40) for i in range(3)]
    parked = _req("p", 0.05, park_on_arrival=True)
    sim.add_arrivals([busy[0], parked, *busy[1:]])
    sim.run()
    assert all(r.finish_reason is FinishReason.LENGTH for r in (*busy, parked))
    # It arrived second but started after every other request had ended: it took no time anyone else needed.
    assert parked.first_scheduled_s >= max(r.finished_s for r in busy)
    assert 0.05 <= parked.parked_s < 0.1   # arrivals are seen between steps


def _step(sched, now: float):
    out = sched.schedule(now)
    sched.update(out, ModelOutput(sampled={rid: 5 for rid in out.requests if out.samples(rid)}, elapsed_s=0.01),
                 now + 0.01)
    return out


def test_parked_work_is_out_of_the_queues_and_the_kv_and_counts_as_waiting():
    device = BUILTIN_PROFILES["paper-4060ti"]
    sched = scheduler("vllm", latency=device.copy())
    a, b = _req("a", 0.0), _req("b", 0.0)
    sched.add_request(a, 0.0)
    sched.add_request(b, 0.0)
    assert set(_step(sched, 0.0).prefill) == {"a", "b"} and sched.kv.num_blocks_held("a") > 0
    sched.park(a, 0.01)   # as a policy does inside plan()
    assert a.status is RequestStatus.PARKED and sched.parked == [a]
    assert a not in sched.running and a not in sched.waiting and sched.kv.num_blocks_held("a") == 0
    assert a.num_computed_tokens == 0   # it recomputes when it comes back
    assert sched.num_waiting == 1 and sched.num_in_sight == 1
    # The update that follows tells the policy and keeps it for that step's observers (the controller counts it
    # as a miss then); the next update reports it no more.
    assert sched.last_parked == []
    out = _step(sched, 0.01)
    assert "a" not in out.requests and sched.last_parked == [a]
    # The executor hears it as a preemption: it frees what it holds for the request (a llama.cpp sequence slot).
    assert out.preempted == ["a"]
    assert "a" not in _step(sched, 0.02).requests and sched.last_parked == []
    # An abort (the client left) ends it like any other request.
    assert sched.abort("a", 0.1) is a and a.finish_reason is FinishReason.ABORT and not sched.parked


def test_a_parked_stream_gets_an_explicit_error_after_max_queue_time():
    device = BUILTIN_PROFILES["paper-4060ti"]
    sched = scheduler("vllm", latency=device.copy())
    stream, fresh = _req("s", 0.0), _req("f", 30.0)   # `f` is within its limit throughout
    sched.add_request(stream, 0.0)
    stream.output_token_ids.append(7)   # a stream that had its first token
    stream.token_times_s.append(0.1)
    sched.add_request(fresh, 30.0)
    sched.park(stream, 1.0)
    assert late_requests(sched, 60.9, max_queue_time_s=60.0) == []
    late = late_requests(sched, 61.1, max_queue_time_s=60.0)
    assert late == [(stream, 60.0)]
    (ended,) = end_late(sched, late, 60.0, 61.1)
    assert ended is stream and stream.finish_reason is FinishReason.REJECTED
    assert "set aside as best effort" in stream.error and "60 s" in stream.error
    assert not sched.parked and "s" not in sched.requests
