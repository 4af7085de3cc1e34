"""QoServe/Niyama's mechanisms on hand-made schedulers: the hybrid key, eager relegation only under
overload, and dynamic chunking from each decode's actual slack. Pure Python (no torch)."""
from __future__ import annotations

from sliceserve.core.latency import LatencyModel
from sliceserve.slo import SLO
from tests.core.schedhelpers import make_request, scheduler, step

EXACT = LatencyModel([0.010 + 0.002 * k for k in range(16)], ctx_coef_s=0.0, prefill_base_s=0.001,
                     prefill_per_token_s=1e-4, prefill_quad_s=0.0)


def qoserve(**config):
    return scheduler("qoserve", EXACT.copy(), **config)


def test_hybrid_key_blends_deadline_and_remaining_prefill():
    # Same deadline: the shorter prompt first. alpha = 0: pure EDF, the earlier deadline first even if long.
    sched = qoserve(qoserve_alpha=1.0)
    short = make_request("short", 100, 4, slo=SLO(ttft_s=2.0))
    long_ = make_request("long", 3000, 4, slo=SLO(ttft_s=2.0))
    assert sched.key(short) < sched.key(long_)
    edf = qoserve(qoserve_alpha=0.0)
    early_long = make_request("el", 3000, 4, slo=SLO(ttft_s=1.9))
    assert edf.key(early_long) < edf.key(short)
    # With a large alpha the short one overtakes the slightly earlier long one.
    assert qoserve(qoserve_alpha=10.0).key(short) < qoserve(qoserve_alpha=10.0).key(early_long)


def test_light_load_relegates_nobody():
    sched = qoserve()
    for i in range(3):
        sched.add_request(make_request(f"r{i}", 64, 4, slo=SLO(ttft_s=1.0, tpot_s=0.1)), 0.0)
    step(sched, 0.0, elapsed_s=0.01)
    assert not sched.relegated


def test_overload_relegates_the_lost_request_and_serves_the_next_first():
    sched = qoserve(max_num_batched_tokens=256, sarathi_min_chunk=1)
    # 2,000 tokens need ~0.2 s of prefill: a 0.1 s TTFT is lost. The next request can still make its own.
    sched.add_request(make_request("lost", 2000, 4, slo=SLO(ttft_s=0.1)), 0.0)
    sched.add_request(make_request("saved", 200, 4, arrival_s=0.0, slo=SLO(ttft_s=0.5)), 0.0)
    out, _ = step(sched, 0.0, elapsed_s=0.02)
    assert sched.relegated == {"lost"}
    assert next(iter(out.prefill)) == "saved"
    assert sched.requests["lost"].req_id in sched.requests  # relegated, not dropped
    off = qoserve(max_num_batched_tokens=256, sarathi_min_chunk=1, qoserve_relegate=False)
    off.add_request(make_request("lost", 2000, 4, slo=SLO(ttft_s=0.1)), 0.0)
    off.add_request(make_request("saved", 200, 4, slo=SLO(ttft_s=0.5)), 0.0)
    out, _ = step(off, 0.0, elapsed_s=0.02)
    assert next(iter(out.prefill)) == "lost" and not off.relegated


def test_dynamic_chunk_uses_each_decodes_actual_slack():
    sched = qoserve(max_num_batched_tokens=4096, sarathi_min_chunk=1)
    sched.add_request(make_request("d", 8, 100, slo=SLO(tpot_s=0.1), ignore_eos=True), 0.0)
    step(sched, 0.0, elapsed_s=0.0)  # prefill: first token at t = 0
    d = sched.requests["d"]
    decode_s = EXACT.decode_time(1, d.num_computed_tokens)
    # Right after its first token the next deadline is 0.1 s away: room for 0.1 - decode - base seconds.
    expect = int((0.1 - decode_s - 0.001) / 1e-4 + 1e-6)
    assert abs(sched.dynamic_budget(0.0, [d]) - expect) <= 1
    # 0.05 s later half the slack is gone and the chunk shrinks with it (Sarathi's would stay the same).
    later = sched.dynamic_budget(0.05, [d])
    assert abs(later - int((0.05 - decode_s - 0.001) / 1e-4 + 1e-6)) <= 1 and later < expect
    # A decode already past its line sets no bound: the whole token budget.
    assert sched.dynamic_budget(0.5, [d]) == 4096 - 1
