"""Sarathi-Serve policy: the TPOT-derived prefill budget, the iteration order, preemption, and whole runs in
the simulator. Pure Python (no torch)."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request, SamplingParams
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.slo import SLO

# Decode 10 ms + 2 ms per extra sequence, a small context term, prefill 5 ms + 0.1 ms/token + quadratic.
EXACT = LatencyModel([0.010 + 0.002 * k for k in range(16)], ctx_coef_s=1e-6, prefill_base_s=0.005,
                     prefill_per_token_s=1e-4, prefill_quad_s=1e-7)


def make_req(rid: str, prompt_len: int, max_tokens: int, arrival_s: float = 0.0, slo: SLO | None = None) -> Request:
    return Request(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   arrival_s=arrival_s, slo=slo or SLO())


def sarathi(latency: LatencyModel = EXACT, **config):
    return make_scheduler("sarathi", SchedulerConfig(policy="sarathi", **config), latency.copy())


def step(sched, now: float, elapsed_s: float = 0.01):
    out = sched.schedule(now)
    sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
    sched.update(out, ModelOutput(sampled=sampled, elapsed_s=elapsed_s), now + elapsed_s)
    return out


def decoding(sched, n: int, tpot_s: float | None, prompt_len: int = 20):
    """Admit `n` requests and run until all of them decode."""
    for i in range(n):
        sched.add_request(make_req(f"d{i}", prompt_len, 50, slo=SLO(tpot_s=tpot_s) if tpot_s else None), 0.0)
    now = 0.0
    while any(r.is_prefilling for r in sched.requests.values()):
        step(sched, now, elapsed_s=0.0)  # no elapsed time: the online latency update stays out of it
        now += 0.01
    return [sched.requests[f"d{i}"] for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 12), tpot_ms=st.floats(20, 200), per_tok=st.floats(1e-5, 1e-3), quad=st.floats(0, 1e-6),
       base=st.floats(0, 0.01))
def test_budget_is_the_largest_chunk_within_the_tightest_attainable_tpot(k, tpot_ms, per_tok, quad, base):
    model = LatencyModel([0.010 + 0.002 * i for i in range(16)], 1e-6, base, per_tok, quad)
    sched = sarathi(model, sarathi_min_chunk=1, max_num_batched_tokens=2048)
    decodes = decoding(sched, k, None)
    tpots = [tpot_ms / 1e3 * (1 + i) for i in range(k)]  # the first is the tightest
    for req, tpot in zip(decodes, tpots):
        req.slo = SLO(tpot_s=tpot)
    budget = sched.prefill_budget(decodes)
    ctx = sum(r.num_computed_tokens for r in decodes) / k
    decode_s = model.decode_time(k, ctx)
    cap = 2048 - k
    keepable = [t for t in tpots if t > decode_s]
    if not keepable:  # no chunk can keep any bound: the budget is the token cap
        assert budget == cap
        return
    tightest = min(keepable)
    if budget > 1:  # above the floor: the budget fits the tightest attainable TPOT
        assert decode_s + model.prefill_time(budget) <= tightest + 1e-12
    if budget < cap:  # and it is the largest that does
        assert decode_s + model.prefill_time(budget + 1) > tightest - 1e-12
    assert 1 <= budget <= cap


def test_budget_without_attainable_tpot_is_the_token_cap_and_floor_applies_on_tiny_slack():
    sched = sarathi(max_num_batched_tokens=300, sarathi_min_chunk=24)
    decodes = decoding(sched, 3, None)
    assert sched.prefill_budget(decodes) == 300 - 3
    ctx = sum(r.num_computed_tokens for r in decodes) / 3
    decode_s = sched.latency.decode_time(3, ctx)
    decodes[1].slo = SLO(tpot_s=decode_s + 0.001)  # 1 ms of slack, less than any prefill: the floor applies
    assert sched.prefill_budget(decodes) == 24
    decodes[2].slo = SLO(tpot_s=decode_s * 0.9)  # unattainable bounds are left out, the others still count
    assert sched.prefill_budget(decodes) == 24
    decodes[1].slo = SLO(tpot_s=decode_s * 0.5)  # nothing attainable: no reason to throttle prefills
    assert sched.prefill_budget(decodes) == 300 - 3
    assert sched.prefill_budget([]) == 300


def test_order_decodes_then_partial_prefills_then_new_prefills_fcfs():
    sched = sarathi(max_num_batched_tokens=64, sarathi_min_chunk=8)
    sched.add_request(make_req("dec", 10, 20), 0.0)
    step(sched, 0.0)  # "dec" prefilled whole, now decoding
    sched.add_request(make_req("long", 100, 5), 0.1)
    out = step(sched, 0.1)
    assert out.decode == ["dec"] and out.prefill == {"long": 63}
    sched.add_request(make_req("new1", 30, 5), 0.2)
    sched.add_request(make_req("new2", 30, 5), 0.2)
    out = step(sched, 0.2)
    # The partly done prefill takes its 37 remaining tokens first; then new1 gets the 26 left; new2 waits.
    assert out.decode == ["dec"]
    assert list(out.prefill.items()) == [("long", 37), ("new1", 26)]
    assert [r.req_id for r in sched.waiting] == ["new2"]


def run_sim(requests, latency: LatencyModel, record: list | None = None, **config):
    sched = sarathi(latency, **config)
    executor = SimulatedExecutor(latency.copy())
    if record is not None:
        inner = executor.execute

        def execute(out):
            result = inner(out)
            k = len(out.decode)
            tpots = [out.requests[r].slo.tpot_s for r in out.decode if out.requests[r].slo.tpot_s]
            record.append((k, min(tpots) if tpots else None, result.elapsed_s, sum(out.prefill.values())))
            return result
        executor.execute = execute  # type: ignore[method-assign]
    sim = Simulator(EngineCore(sched, executor), max_time_s=3600.0)
    sim.add_arrivals(requests)
    return sim.run(), sched


def random_workload(n: int, rate: float, seed: int, tpot_s: float | None = 0.05) -> list[Request]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        slo = SLO(tpot_s=tpot_s * rng.choice((1, 2, 4))) if tpot_s and rng.random() < 0.7 else SLO(e2e_s=30.0)
        out.append(make_req(f"r{i}", rng.randint(5, 400), rng.randint(1, 60), t, slo))
    return out


def test_every_iteration_with_a_tpot_decode_stays_within_it_under_an_exact_model():
    record: list = []
    result, _ = run_sim(random_workload(120, 20.0, 3), EXACT, record, max_num_batched_tokens=1024,
                        sarathi_min_chunk=8)
    assert all(r.finish_reason is FinishReason.LENGTH for r in result.requests)
    with_tpot = [(k, tpot, elapsed, chunk) for k, tpot, elapsed, chunk in record if tpot is not None]
    mixed = [x for x in with_tpot if x[3] > 8]
    assert len(mixed) > 20, "the workload must exercise chunks alongside TPOT-bound decodes"
    for k, tpot, elapsed, chunk in with_tpot:
        if chunk > 8:  # above the floor the budget came from the TPOT, so the iteration must fit it
            assert elapsed <= tpot + 1e-12, (k, tpot, elapsed, chunk)


def test_random_workloads_complete_including_under_kv_pressure():
    for seed in range(3):
        reqs = random_workload(80, 30.0, seed)
        result, sched = run_sim(reqs, EXACT, num_kv_blocks=40, block_size=16, max_num_seqs=8)
        assert len(result.requests) == 80
        assert all(r.finish_reason is FinishReason.LENGTH for r in result.requests), \
            {r.finish_reason for r in result.requests}
        assert all(r.num_output_tokens == r.max_tokens for r in result.requests)
        assert sched.kv.num_free_blocks == sched.kv.num_blocks
    # 40 blocks of 16 tokens for prompts up to 400: recompute preemption must have happened somewhere.
    assert result.num_preemptions > 0 or any(r.num_preemptions for r in reqs)
