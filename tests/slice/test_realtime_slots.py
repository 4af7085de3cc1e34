"""Real-time slots under SLICE: a request whose SLO is already lost must not hold a slot an on-time one
needs, and a newcomer must not be held back from its first token (edge-mix rate 3 diagnosis).
"""
from __future__ import annotations

from sliceserve.core.latency import LatencyModel, load_profile
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


def test_prompt_done_but_no_token_yet_is_not_held_back_by_another_members_prefill(paper):
    # A 64-token iteration budget splits the real-time prompt (129 tokens) into 64 + 64 + 1: its last
    # prompt token then runs as a decode step, while the long prompt of a lower-density member is still
    # being prefilled. The rule "members far ahead of their TPOT line sit a column out for a newcomer's
    # prefill" read its missing TPOT line as infinite slack and held it back until that prompt was done.
    n = make_req("n", arrival=0.0, prompt=1000, max_tokens=20, ttft=5.0, tpot=0.25, utility=1.0, cls="nrt")
    r = make_req("r", arrival=0.0, prompt=129, max_tokens=20)
    run(make_slice(paper.copy(), max_num_batched_tokens=64), [n, r], load_profile("paper-4060ti"))
    assert r.ttft_s <= 0.5, r.ttft_s            # old code: 0.656 s
    assert tpot(r) <= 0.05
    assert n.ttft_s <= 5.0 and tpot(n) <= 0.25
