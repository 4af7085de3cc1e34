"""SlidingServe policy: whole runs in the simulator, TPOT protection under an exact latency model, the
knapsack BatchConstructor, recompute preemption, and the online predictor. Pure Python (no torch)."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput
from sliceserve.core.policies import make_scheduler
from sliceserve.core.sliding.predictor import DECODE_ONLY, BatchFeatures
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request, SamplingParams
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.slo import SLO

EXACT = LatencyModel([0.010 + 0.002 * k for k in range(16)], ctx_coef_s=1e-6, prefill_base_s=0.005,
                     prefill_per_token_s=1e-4, prefill_quad_s=1e-7)
SLOS = [SLO(), SLO(ttft_s=0.3, tpot_s=0.04), SLO(ttft_s=1.0, tpot_s=0.1), SLO(e2e_s=5.0)]


def make_req(rid: str, prompt_len: int, max_tokens: int, arrival_s: float = 0.0, slo: SLO | None = None,
             utility: float = 1.0) -> Request:
    return Request(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   arrival_s=arrival_s, slo=slo or SLO(), utility=utility)


def sliding(latency: LatencyModel = EXACT, **config):
    return make_scheduler("sliding", SchedulerConfig(policy="sliding", **config), latency.copy())


def simulate(sched, reqs: list[Request], noise: float = 0.0, seed: int = 0):
    sim = Simulator(EngineCore(sched, SimulatedExecutor(EXACT.copy(), noise=noise, seed=seed)), max_time_s=1e4)
    sim.add_arrivals(reqs)
    return sim.run()


def random_workload(seed: int, n: int, rate: float, max_prompt: int = 700) -> list[Request]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        out.append(make_req(f"r{i}", rng.randint(1, max_prompt), rng.randint(1, 60), t, rng.choice(SLOS),
                            rng.choice([1.0, 1.0, 100.0])))
    return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(1.0, 40.0), kv_blocks=st.sampled_from([64, 200, 4096]),
       noise=st.sampled_from([0.0, 0.1]))
def test_completes_random_workloads(seed, rate, kv_blocks, noise):
    reqs = random_workload(seed, 30, rate)
    sched = sliding(num_kv_blocks=kv_blocks, block_size=16, max_num_seqs=8, max_num_batched_tokens=256)
    result = simulate(sched, reqs, noise, seed)
    for r in result.requests:
        assert r.finish_reason is FinishReason.LENGTH, (r.req_id, r.finish_reason, r.error)
        assert r.num_output_tokens == r.max_tokens
        assert r.token_times_s == sorted(r.token_times_s)
    assert not sched.requests and sched.kv.num_free_blocks == kv_blocks


def test_kv_shortage_preempts_the_lowest_priority_by_recompute():
    sched = sliding(num_kv_blocks=4, block_size=16)
    urgent = make_req("urgent", 16, 40, slo=SLO(tpot_s=0.05))
    relaxed = make_req("relaxed", 16, 40)
    result = simulate(sched, [urgent, relaxed])
    assert result.num_preemptions >= 1
    assert relaxed.num_preemptions >= 1 and urgent.num_preemptions == 0
    assert all(r.finish_reason is FinishReason.LENGTH for r in (urgent, relaxed))


def test_decodes_keep_their_tpot_while_a_long_prompt_is_chunked():
    # Exact latency model for prediction and execution; the prior stays in use (min_samples = window).
    sched = sliding(max_num_batched_tokens=512, sliding_min_samples=256, sliding_predictor_window=256)
    decodes = [make_req(f"d{i}", 30, 120, 0.0, SLO(tpot_s=0.03)) for i in range(4)]
    long_prompt = make_req("long", 3000, 5, 0.2)
    result = simulate(sched, decodes + [long_prompt])
    for r in decodes:
        mean_tpot = (r.token_times_s[-1] - r.token_times_s[0]) / (r.num_output_tokens - 1)
        assert mean_tpot <= 0.03, (r.req_id, mean_tpot)
        for j, t in enumerate(r.token_times_s[1:], start=1):  # every token by its sliding deadline
            assert t <= r.token_times_s[0] + j * 0.03 + 1e-9
    assert long_prompt.finish_reason is FinishReason.LENGTH
    # The prompt was chunked around the decodes rather than run whole (3000 tokens would take >1 s).
    assert long_prompt.token_times_s[0] < max(r.token_times_s[-1] for r in decodes)
    assert result.num_iterations > 10


def test_knapsack_runs_the_valuable_request_when_both_cannot_make_ttft():
    sched = sliding()
    cheap = make_req("cheap", 300, 4, 0.0, SLO(ttft_s=0.05), utility=1.0)
    valuable = make_req("valuable", 300, 4, 0.0, SLO(ttft_s=0.06), utility=100.0)
    sched.add_request(cheap, 0.0)
    sched.add_request(valuable, 0.0)
    out = sched.schedule(0.0)
    # Each prompt alone takes 44 ms; both take 101 ms and the chunk plan (cheap first) would miss both.
    assert out.prefill == {"valuable": 300}
    assert sched.num_knapsack_runs == 1


def test_no_knapsack_when_the_chunk_plan_meets_every_ttft():
    sched = sliding()
    for i in range(2):
        sched.add_request(make_req(f"r{i}", 100, 4, 0.0, SLO(ttft_s=1.0)), 0.0)
    out = sched.schedule(0.0)
    assert out.prefill == {"r0": 100, "r1": 100}
    assert sched.num_knapsack_runs == 0


def test_predictor_learns_from_measured_iterations():
    sched = sliding(sliding_min_samples=16, sliding_refit_every=8)
    sched.add_request(make_req("a", 20, 100), 0.0)
    now = 0.0
    for _ in range(60):
        out = sched.schedule(now)
        sampled = {rid: 3 for rid in out.requests if out.samples(rid)}
        sched.update(out, ModelOutput(sampled=sampled, elapsed_s=0.123), now + 0.123)  # a slow device
        now += 0.123
    assert sched.predictor.is_fitted(DECODE_ONLY)
    assert abs(sched.predictor.predict(BatchFeatures.of([60], [])) - 0.123) < 2e-3


def test_admission_keeps_the_decode_batch_within_its_tightest_tpot():
    # EXACT decodes: 4 sequences take ~16.1 ms, 5 take ~18.1 ms; TPOT 17 ms (95% usable = 16.15 ms).
    for check, admitted in ((True, 4), (False, 5)):
        sched = sliding(sliding_admit_check=check)
        for i in range(5):
            sched.add_request(make_req(f"r{i}", 20, 10, 0.0, SLO(tpot_s=0.017)), 0.0)
        assert len(sched.schedule(0.0).prefill) == admitted


def test_online_prediction_error_in_a_simulated_run():
    # The device is the SLICE paper's step-shaped decode table with 5% lognormal noise; the predictor is
    # linear per regime, so it cannot be exact. Every iteration is predicted before it is measured.
    from sliceserve.core.latency import load_profile

    device = load_profile("paper-4060ti")
    sched = make_scheduler("sliding", SchedulerConfig(policy="sliding"), device.copy())
    sim = Simulator(EngineCore(sched, SimulatedExecutor(device, noise=0.05, seed=7)), max_time_s=1e4)
    sim.add_arrivals(random_workload(seed=5, n=80, rate=1.0, max_prompt=600))
    sim.run()
    print(f"\nsliding predictor, online (prequential) MAPE on paper-4060ti with 5% noise: "
          f"{sched.prediction_mape:.1%} over {sched.num_predictions} iterations")
    assert sched.num_predictions > 200
    assert sched.prediction_mape < 0.15


def test_running_prompts_proceed_when_the_waiting_head_finds_no_kv():
    """Found by test_completes_random_workloads: with 64 blocks, two part-computed running prompts held 53 and
    the plan gave the whole chunk budget to a waiting utility-100 prompt that could not get its 16 blocks, so
    nothing ran again ('scheduler could not make progress')."""
    reqs = random_workload(2669, 30, 37.37308261943479)
    sched = sliding(num_kv_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=256)
    result = simulate(sched, reqs, 0.1, 2669)
    assert all(r.finish_reason is FinishReason.LENGTH for r in result.requests), \
        [(r.req_id, r.error) for r in result.requests if r.finish_reason is not FinishReason.LENGTH]
    assert not sched.requests and sched.kv.num_free_blocks == 64
