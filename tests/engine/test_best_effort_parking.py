"""`overload: best_effort` parks what `overload: reject` refuses (admission's predicted misses, SLICE's lost
work), so the rest of the schedule is the one `reject` runs: best effort takes no time from requests that can
still make their SLO, and a request `reject` refused meets its SLO under `best_effort` only on time nobody
else needed (issue 16's false refusals, benchmarks/admission_fidelity.py)."""
from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from sliceserve.bench.device_scale import latency_scale
from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request
from sliceserve.server.admission import lost_work_config, make_admit
from sliceserve.server.control import attach_control
from sliceserve.server.settings import ServerSettings
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.workload import generate, get_preset
from sliceserve.workload.spec import to_requests


def _serve(overload: str, rate: float, seed: int) -> tuple[dict[str, Request], float]:
    """A simulated server with the server's defaults under `overload`: its requests by id, and when parked work
    first came back to run (inf if never)."""
    server, device = ServerSettings(), load_profile("cpu-epyc-int8")
    scale = latency_scale(device)
    wl = generate("edge-mix", rate, 60.0, seed, mix=get_preset("edge-mix", scale.slo, scale.ttft))
    config = SchedulerConfig(policy="slice").with_overrides(
        max_num_seqs=server.max_num_seqs, max_num_batched_tokens=server.max_num_batched_tokens,
        enable_prefix_caching=False, **lost_work_config(overload))
    sched = make_scheduler("slice", config, device.copy())
    back = [float("inf")]
    on_unpark = sched.on_unpark

    def first_back(req, now):
        back[0] = min(back[0], now)
        on_unpark(req, now)

    sched.on_unpark = first_back
    sim = Simulator(EngineCore(sched, SimulatedExecutor(device.copy())), max_time_s=600.0,
                    max_queue_time_s=server.max_queue_time_s)
    sim.admit = make_admit(server.max_waiting, overload)
    state = SimpleNamespace(engine=sim, metrics=SimpleNamespace(registry=CollectorRegistry()))
    attach_control(FastAPI(), state, server.controller.to_config())   # as the server wires it
    reqs = to_requests(wl.specs, wl.classes)
    sim.add_arrivals(reqs)
    sim.run()
    return {r.req_id: r for r in reqs}, back[0]


def test_best_effort_parks_what_reject_refuses_and_runs_the_same_schedule_for_the_rest():
    rejected, _ = _serve("reject", 1.6, seed=2)          # about 2x what this device sustains
    parked, first_back = _serve("best_effort", 1.6, seed=2)
    refused = {rid for rid, r in rejected.items() if r.finish_reason is FinishReason.REJECTED}
    by_door = {rid for rid in refused if rejected[rid].first_scheduled_s is None}
    assert len(refused) >= 20 and by_door and refused - by_door   # both admission and the policy refused
    # Under best effort nothing was refused for its SLO: each of those requests was parked instead.
    assert all(parked[rid].parked_s is not None for rid in refused)
    assert not any(r.error and "SLO cannot be met" in r.error for r in parked.values())
    # Up to the moment parked work first ran, every other request got exactly the same tokens at the same times.
    same = [rid for rid, r in rejected.items() if rid not in refused and r.finished_s < first_back]
    assert len(same) >= 30
    assert all(parked[rid].token_times_s == rejected[rid].token_times_s for rid in same)
