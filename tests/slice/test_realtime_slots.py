"""Real-time slots under SLICE: a request whose SLO is already lost must not hold a slot an on-time one
needs (edge-mix rate 3 diagnosis).
"""
from __future__ import annotations

from sliceserve.core.latency import LatencyModel
from tests.slice.conftest import make_req, make_slice
from tests.slice.test_policy import run, tpot


def test_request_whose_first_token_came_late_does_not_take_an_on_time_requests_slot():
    # Two real-time streams fill this device (20 * 48 ms = 0.96 s of a 1 s cycle; a third would need
    # 20 * 100 ms), and nothing else fits beside them.
    lat = LatencyModel([0.03, 0.048, 0.1, 0.15], prefill_base_s=0.005, prefill_per_token_s=0.0001)
    a = [make_req(f"a{i}", arrival=0.01 * i, prompt=32, max_tokens=30) for i in range(2)]
    # Arrives while both slots are taken until after its TTFT (a0 ends at ~1.37 s > 0.85 + 0.5): its first
    # token comes late, so its SLO is lost whatever it gets afterwards.
    late = make_req("late", arrival=0.85, prompt=32, max_tokens=30)
    b = [make_req(f"b{i}", arrival=1.7 + 0.01 * i, prompt=32, max_tokens=30) for i in range(2)]
    run(make_slice(lat.copy()), a + [late] + b, lat)
    assert late.ttft_s > 0.5                     # premise: it did miss
    for r in b:                                  # the old code kept "late" in a slot: b1's TTFT was 1.0 s
        assert r.ttft_s <= 0.5, (r.req_id, r.ttft_s)
        assert tpot(r) <= 0.05, (r.req_id, tpot(r))
    assert late.num_output_tokens == 30          # still served, best effort

