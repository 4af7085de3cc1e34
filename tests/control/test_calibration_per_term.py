"""The controller in the simulator when only decode slows down: the prefill estimate must not move.

Before per-term calibration the controller scaled the whole latency model by the median measured/predicted
ratio of its cycle's iterations, mostly decode steps, so a decode-only slowdown doubled the prefill estimate
too (and on a live server ratcheted it to 3-4x what prompts measured, refusing feasible real-time work)."""
from __future__ import annotations

import pytest

from sliceserve.config import SchedulerConfig
from sliceserve.control.controller import ControllerConfig
from sliceserve.core.latency import load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.workload.presets import generate
from sliceserve.workload.spec import to_requests
from tests.control.simhelpers import RT_MIX, attach_controller

SLOW_AT = 30.0


@pytest.mark.parametrize("policy, rate", [("slice", 1.0), ("sarathi", 2.0)])
def test_decode_slows_2x_prefill_estimate_unmoved(policy, rate):
    # sarathi under load: most iterations carry a prompt chunk beside decodes (the live server's case).
    wl = generate("test", rate, 120, 3, mix=RT_MIX)
    profile = load_profile("paper-4060ti")
    sched = make_scheduler(policy, SchedulerConfig(policy=policy), profile.copy())
    ex = SimulatedExecutor(profile.copy(), noise=0.05, seed=3)
    sim = Simulator(EngineCore(sched, ex), max_time_s=360)
    ctl = attach_controller(sim, ControllerConfig())
    sim.add_arrivals(to_requests(wl.specs, wl.classes))
    slow = profile.copy()
    slow.decode_table_s = [2 * t for t in slow.decode_table_s]   # decode 2x slower, prefill as before
    sim.at(SLOW_AT, lambda now: setattr(ex, "device", slow))
    sim.run()
    lat = sched.latency
    print(f"\nl(1) {lat.decode_time(1) * 1e3:.1f} ms (device {slow.decode_time(1) * 1e3:.1f}), p(256) "
          f"{lat.prefill_time(256) * 1e3:.1f} ms (device {slow.prefill_time(256) * 1e3:.1f}), {ctl.num_cycles} cycles")
    assert lat.decode_time(1) == pytest.approx(slow.decode_time(1), rel=0.1)
    assert lat.prefill_time(256) == pytest.approx(profile.prefill_time(256), rel=0.05)
