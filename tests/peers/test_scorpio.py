"""SCORPIO's mechanisms on hand-made schedulers: the VBS fixed point, credit-based batching, LDF order,
VBS admission, and rejection of requests whose TTFT is already infeasible. Pure Python (no torch)."""
from __future__ import annotations

import math

from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies.scorpio import virtual_step_s
from sliceserve.request import FinishReason, RequestStatus
from sliceserve.slo import SLO
from tests.core.schedhelpers import make_request, scheduler, step

# Decode 10 ms + 10 ms per extra sequence (steep, like an edge device), prefill 1 ms + 0.1 ms/token.
STEEP = LatencyModel([0.010 * (k + 1) for k in range(16)], ctx_coef_s=0.0, prefill_base_s=0.001,
                     prefill_per_token_s=1e-4, prefill_quad_s=0.0)


def scorpio(**config):
    return scheduler("scorpio", STEEP.copy(), **config)


def run_until_decoding(sched, now=0.0):
    while any(r.is_prefilling for r in sched.requests.values()):
        step(sched, now, elapsed_s=0.0)
    return now


def test_virtual_step_is_the_fixed_point_of_credit_shares():
    # Without TPOTs every request decodes every step: the full batch.
    assert virtual_step_s(STEEP, [None] * 4, 0.0) == STEEP.decode_time(4)
    # Every share is T / t: at T = 10 ms a 50 ms stream needs 0.2 of the steps and three 1 s streams
    # 0.01 each, so one slot suffices and that T is a fixed point.
    t = virtual_step_s(STEEP, [0.05, 1.0, 1.0, 1.0], 0.0)
    assert t == STEEP.decode_time(1)
    assert t == STEEP.decode_time(math.ceil(t / 0.05 + 3 * t / 1.0))
    # Four 15 ms streams cannot share: each needs every step, the step is that of four.
    assert virtual_step_s(STEEP, [0.015] * 4, 0.0) == STEEP.decode_time(4)


def test_credits_let_a_loose_tpot_skip_steps_it_does_not_need():
    sched = scorpio()
    sched.add_request(make_request("tight", 8, 200, slo=SLO(tpot_s=0.05), ignore_eos=True), 0.0)
    sched.add_request(make_request("loose", 8, 200, slo=SLO(tpot_s=0.5), ignore_eos=True), 0.0)
    now = run_until_decoding(sched)
    counts = {"tight": 0, "loose": 0}
    for _ in range(60):
        out, _ = step(sched, now, elapsed_s=0.05)
        now += 0.05
        for rid in out.decode:
            counts[rid] += 1
    assert counts["tight"] == 60
    # The tight one earns 0.05 / (0.05 * 0.95) > 1 credit a step, so it decodes every step; the loose one
    # earns 0.105 a step: one decode per ~9.5 steps (plus its starting credit), never more than it needs.
    assert 6 <= counts["loose"] <= 8
    # It still keeps its TPOT: tokens no further apart on average than 0.5 s.
    loose = sched.requests["loose"]
    gaps = (loose.token_times_s[-1] - loose.token_times_s[0]) / (len(loose.token_times_s) - 1)
    assert gaps <= 0.5


def test_decodes_all_run_when_nobody_holds_a_credit_and_nothing_else_runs():
    sched = scorpio()
    sched.add_request(make_request("a", 8, 50, slo=SLO(tpot_s=1.0), ignore_eos=True), 0.0)
    now = run_until_decoding(sched)
    for _ in range(5):  # credits run out after the first decode, yet the device is never left idle
        out, _ = step(sched, now, elapsed_s=0.01)
        now += 0.01
        assert out.decode == ["a"]


def test_least_deadline_first_admission():
    sched = scorpio(max_num_batched_tokens=64, sarathi_min_chunk=1)
    sched.add_request(make_request("late", 64, 4, arrival_s=0.0, slo=SLO(ttft_s=5.0)), 0.0)
    sched.add_request(make_request("urgent", 64, 4, arrival_s=0.1, slo=SLO(ttft_s=1.0)), 0.1)
    out, _ = step(sched, 0.1, elapsed_s=0.0)
    assert list(out.prefill) == ["urgent"]


def test_infeasible_ttft_is_rejected_at_once_and_reported_as_ended():
    sched = scorpio()
    # 2,000 prompt tokens take > 0.2 s of prefill: a 50 ms TTFT is lost before anything runs.
    sched.add_request(make_request("hopeless", 2000, 4, slo=SLO(ttft_s=0.05)), 0.0)
    sched.add_request(make_request("fine", 32, 4, slo=SLO(ttft_s=1.0)), 0.0)
    out, ended = step(sched, 0.0, elapsed_s=0.01)
    assert [r.req_id for r in ended] == ["hopeless"]
    assert ended[0].finish_reason is FinishReason.REJECTED and "TTFT" in ended[0].error
    assert "hopeless" not in sched.requests and sched.num_rejected == 1
    assert list(out.prefill) == ["fine"]
    # Switched off, the same request is kept (and served late).
    keep = scorpio(scorpio_reject=False)
    keep.add_request(make_request("hopeless", 2000, 4, slo=SLO(ttft_s=0.05)), 0.0)
    _, ended = step(keep, 0.0, elapsed_s=0.01)
    assert not ended and keep.requests["hopeless"].status is RequestStatus.RUNNING


def test_rejection_does_not_charge_refused_work_to_those_behind():
    sched = scorpio(max_num_batched_tokens=4096)
    # A huge hopeless prompt ahead in LDF order must not make the next one look infeasible too.
    sched.add_request(make_request("huge", 3000, 4, slo=SLO(ttft_s=0.1)), 0.0)
    sched.add_request(make_request("next", 100, 4, slo=SLO(ttft_s=0.2)), 0.0)
    _, ended = step(sched, 0.0, elapsed_s=0.01)
    assert [r.req_id for r in ended] == ["huge"]
    assert "next" in sched.requests


def test_vbs_admission_keeps_the_tightest_tpot():
    sched = scorpio()
    for i in range(4):  # four tight streams: the step of 4 is 40 ms, within 50 ms * 0.95
        sched.add_request(make_request(f"rt{i}", 8, 100, slo=SLO(tpot_s=0.05), ignore_eos=True), 0.0)
    now = run_until_decoding(sched)
    assert len(sched.running) == 4
    sched.add_request(make_request("rt4", 8, 100, slo=SLO(tpot_s=0.05)), now)
    out, _ = step(sched, now, elapsed_s=0.04)
    # A fifth would make the step 50 ms > 47.5 ms: it waits, and nobody overtakes it.
    assert "rt4" not in out.prefill and sched.requests["rt4"].status is RequestStatus.WAITING
    # Even a tiny share takes a whole slot of the step, so a loose request does not fit either.
    assert sched._admissible(make_request("loose", 8, 100, slo=SLO(tpot_s=5.0))) is False
    three = scorpio()
    for i in range(3):
        three.add_request(make_request(f"rt{i}", 8, 100, slo=SLO(tpot_s=0.05), ignore_eos=True), 0.0)
    run_until_decoding(three)
    assert three._admissible(make_request("rt3", 8, 100, slo=SLO(tpot_s=0.05))) is True


def test_a_running_prompts_rest_is_priced_with_the_attention_over_its_cached_part():
    """A long prompt 1,536 tokens into its prefill still has 512 tokens to run, whose attention reads all it has
    cached: on a CPU-profiled model (attention priced per pair) that rest takes ~0.97 s, not the ~0.18 s of a
    fresh 512-token prompt; a newcomer with a 0.5 s TTFT behind it is infeasible."""
    lat = STEEP.copy()
    lat.prefill_attn_s = 1e-6
    assert lat.prefill_time(512, 1536) > 0.5 > lat.prefill_time(512) + lat.prefill_time(32) + 0.1
    sched = scheduler("scorpio", lat, max_num_batched_tokens=512)
    sched.add_request(make_request("long", 2048, 4, slo=SLO(ttft_s=60.0)), 0.0)
    for _ in range(3):
        step(sched, 0.0, elapsed_s=0.01)
    assert sched.requests["long"].num_computed_tokens == 1536
    sched.add_request(make_request("next", 32, 4, slo=SLO(ttft_s=0.5)), 0.0)
    _, ended = step(sched, 0.0, elapsed_s=0.01)
    assert [r.req_id for r in ended] == ["next"]
