"""SLO-aware simulated annealing: the objective, the search, the output-length estimate, and the policy in
the simulator. Pure Python (no torch)."""
from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sliceserve.config import SchedulerConfig
from sliceserve.core.annealing import AnnealParams, Job, OutputLengthEstimator, SearchProblem, anneal
from sliceserve.core.latency import LatencyModel
from sliceserve.core.outputs import ModelOutput
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request, SamplingParams
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.slo import SLO

MODEL = LatencyModel([0.010 + 0.004 * k for k in range(16)], ctx_coef_s=1e-6, prefill_base_s=0.005,
                     prefill_per_token_s=2e-4)
REALTIME = SLO(ttft_s=0.5, tpot_s=0.05)


def make_req(rid: str, prompt_len: int, max_tokens: int, arrival_s: float = 0.0, slo: SLO | None = None,
             slo_class: str = "default") -> Request:
    return Request(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   arrival_s=arrival_s, slo=slo or SLO(), slo_class=slo_class)


def annealing(latency: LatencyModel = MODEL, **config):
    return make_scheduler("annealing", SchedulerConfig(policy="annealing", **config), latency.copy())


def crafted_jobs() -> list[Job]:
    # FCFS puts a long, loose batch job ahead of three short real-time ones.
    long = Job(0.0, MODEL.prefill_time(1000), 100, SLO(e2e_s=60.0))
    short = [Job(0.01 * i, MODEL.prefill_time(20), 5, REALTIME) for i in range(1, 4)]
    return [long, *short]


# --- objective ----------------------------------------------------------------------------------------
def test_objective_of_one_request_follows_the_slot_model():
    job = Job(0.0, MODEL.prefill_time(50), 10, SLO(ttft_s=1.0, tpot_s=0.05))
    problem = SearchProblem(0.5, [], [job], MODEL, max_batch=4, ctx=50.0)
    tau = MODEL.decode_time(1, 50.0)  # one request: the batch is never fuller than 1
    finish = 0.5 + MODEL.prefill_time(50) + 9 * tau
    assert problem.score([0], 4) == (1, pytest.approx(finish))
    late = SearchProblem(2.0, [], [Job(0.0, job.prefill_s, 10, SLO(ttft_s=1.0))], MODEL, 4, 50.0)
    assert late.score([0], 1)[0] == 0  # it arrived 2 s ago: TTFT 1 s is lost
    tight = SearchProblem(0.0, [], [Job(0.0, job.prefill_s, 10, SLO(tpot_s=tau * 0.99))], MODEL, 4, 50.0)
    assert tight.objective([0], 1) == 0.0


def test_running_requests_hold_slots_until_their_predicted_finish():
    running = [Job(0.0, 0.0, 30, SLO(), first_token_s=0.1, decoding=True)]
    waiting = [Job(0.45, 0.02, 5, SLO(ttft_s=0.2))]
    problem = SearchProblem(0.5, running, waiting, MODEL, max_batch=2)
    # Batch 1: the waiting job starts only when the running one is done (30 steps), far past its TTFT.
    assert problem.score([0], 1)[0] == 1  # only the running one (no SLO) counts as met
    assert problem.score([0], 2)[0] == 2


# --- search -------------------------------------------------------------------------------------------
def brute_force_best(problem: SearchProblem, n: int) -> float:
    return max(problem.objective(list(p), b) for p in itertools.permutations(range(n))
               for b in range(1, problem.max_batch + 1))


def test_annealing_improves_g_over_fcfs_on_a_crafted_case_and_finds_the_optimum():
    jobs = crafted_jobs()
    problem = SearchProblem(0.05, [], jobs, MODEL, max_batch=2, ctx=100.0)
    result = anneal(problem, [0, 1, 2, 3], 1, AnnealParams(), random.Random(0))
    assert result.initial_objective == problem.objective([0, 1, 2, 3], 1)
    assert result.objective > result.initial_objective * 1.5
    assert result.objective == pytest.approx(brute_force_best(problem, 4))
    assert result.order[-1] == 0 or result.batch_size == 2  # the long job no longer blocks the short ones
    assert problem.score(result.order, result.batch_size)[0] == 4


def test_batch_size_move_picks_a_batch_that_keeps_tpot():
    tau1, tau2 = MODEL.decode_time(1, 0.0), MODEL.decode_time(2, 0.0)
    slo = SLO(tpot_s=(tau1 + tau2) / 2)  # one at a time keeps TPOT, two together break it
    jobs = [Job(0.0, 0.01, 20, slo), Job(0.0, 0.01, 20, slo)]
    problem = SearchProblem(0.0, [], jobs, MODEL, max_batch=8)
    result = anneal(problem, [0, 1], 8, AnnealParams(iterations=200), random.Random(1))
    assert result.batch_size == 1 and problem.score(result.order, 1)[0] == 2


job_st = st.builds(
    Job, st.floats(0, 5), st.floats(0, 0.5), st.integers(1, 200),
    st.sampled_from([SLO(), REALTIME, SLO(ttft_s=1.0, tpot_s=0.1), SLO(e2e_s=5.0), SLO(e2e_s=60.0)]))


@settings(max_examples=80, deadline=None)
@given(waiting=st.lists(job_st, max_size=10), running=st.lists(job_st, max_size=4), max_b=st.integers(1, 8),
       data=st.data(), seed=st.integers(0, 2**16), iterations=st.integers(1, 60))
def test_search_returns_a_valid_state_never_worse_than_the_start(waiting, running, max_b, data, seed, iterations):
    order = data.draw(st.permutations(range(len(waiting))))
    b = data.draw(st.integers(1, max_b))
    problem = SearchProblem(5.0, running, waiting, MODEL, max_batch=max_b, ctx=64.0)
    result = anneal(problem, list(order), b, AnnealParams(iterations=iterations), random.Random(seed))
    assert sorted(result.order) == list(range(len(waiting)))
    assert 1 <= result.batch_size <= max_b
    assert result.objective >= result.initial_objective
    assert result.objective == problem.objective(result.order, result.batch_size)


# --- output-length estimate ---------------------------------------------------------------------------
def test_output_length_estimate_learns_per_class_from_normal_ends_only():
    est = OutputLengthEstimator()
    probe = make_req("p", 5, 200, slo_class="chat")
    assert est.predict(probe) == 200  # prior: max_tokens
    assert OutputLengthEstimator(default=40).predict(probe) == 40
    for n, reason in ((10, FinishReason.STOP), (30, FinishReason.LENGTH), (500, FinishReason.ABORT)):
        req = make_req(f"x{n}", 5, 1000, slo_class="chat")
        req.output_token_ids = [1] * n
        req.finish_reason = reason
        est.observe(req)
    assert est.class_mean("chat") == 20  # the aborted one is left out
    assert est.predict(probe) == 20
    assert est.predict(make_req("q", 5, 200, slo_class="other")) == 200
    assert est.predict(make_req("r", 5, 8, slo_class="chat")) == 8  # never above max_tokens
    probe.output_token_ids = [1] * 25
    assert est.remaining(probe) == 1


# --- the policy ---------------------------------------------------------------------------------------
def step(sched, now: float, elapsed_s: float = 0.0):
    out = sched.schedule(now)
    sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
    sched.update(out, ModelOutput(sampled=sampled, elapsed_s=elapsed_s), now + elapsed_s)
    return out


def test_policy_admits_the_tight_requests_before_an_earlier_long_one():
    sched = annealing(max_num_seqs=2, max_num_batched_tokens=2048)
    sched.add_request(make_req("long", 1000, 100, 0.0, SLO(e2e_s=60.0), "batch"), 0.0)
    for i in range(3):
        sched.add_request(make_req(f"rt{i}", 20, 5, 0.01 * (i + 1), REALTIME, "realtime"), 0.03)
    out = step(sched, 0.05)
    assert "long" not in out.prefill and len(out.prefill) == sched.batch_size
    assert sched.num_searches == 1 and sched.last_result.objective > sched.last_result.initial_objective


ops_st = st.lists(st.tuples(st.sampled_from(["arrive", "step", "abort"]), st.integers(1, 300),
                            st.integers(1, 40), st.sampled_from([None, REALTIME, SLO(e2e_s=3.0)])),
                  min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(ops=ops_st)
def test_policy_order_is_always_a_permutation_of_exactly_the_waiting_set(ops):
    sched = annealing(max_num_seqs=4, num_kv_blocks=40, block_size=16, annealing_iterations=20)
    now, ids = 0.0, itertools.count()
    for kind, n, m, slo in ops:
        if kind == "arrive":
            sched.add_request(make_req(f"r{next(ids)}", n, m, now, slo), now)
        elif kind == "abort" and sched.requests:
            sched.abort(sorted(sched.requests)[n % len(sched.requests)], now)
        else:
            step(sched, now, 0.02)
            now += 0.02
            order = sched.order
            assert len(order) == len(set(order))
            assert set(order) == {r.req_id for r in sched.waiting}
            assert 1 <= sched.batch_size <= 4


def test_order_matches_the_queue_right_after_a_preemption():
    # Two requests whose decodes outgrow a 4-block cache: one is preempted back to waiting, and `order`
    # must list it at once (hypothesis found it missing until the next plan).
    sched = annealing(max_num_seqs=4, num_kv_blocks=4, block_size=16, annealing_iterations=20)
    sched.add_request(make_req("a", 20, 40), 0.0)
    sched.add_request(make_req("b", 20, 40), 0.0)
    now = 0.0
    for _ in range(200):
        before = sched.num_preemptions
        step(sched, now, 0.02)
        now += 0.02
        assert set(sched.order) == {r.req_id for r in sched.waiting}
        if sched.num_preemptions > before:
            break
    assert sched.num_preemptions > 0


def random_workload(n: int, rate: float, seed: int) -> list[Request]:
    rng = random.Random(seed)
    classes = [("realtime", REALTIME), ("interactive", SLO(ttft_s=1.0, tpot_s=0.1)), ("batch", SLO(e2e_s=30.0))]
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        name, slo = rng.choice(classes)
        out.append(make_req(f"r{i}", rng.randint(5, 400), rng.randint(1, 60), t, slo, name))
    return out


def run_sim(requests: list[Request], **config):
    sched = annealing(**config)
    sim = Simulator(EngineCore(sched, SimulatedExecutor(MODEL.copy())), max_time_s=3600.0)
    sim.add_arrivals(requests)
    return sim.run(), sched


def test_random_workloads_complete_including_under_kv_pressure():
    preemptions = 0
    for seed in range(3):
        result, sched = run_sim(random_workload(80, 30.0, seed), num_kv_blocks=40, block_size=16, max_num_seqs=8,
                                annealing_iterations=30)
        assert len(result.requests) == 80
        assert all(r.finish_reason is FinishReason.LENGTH for r in result.requests)
        assert all(r.num_output_tokens == r.max_tokens for r in result.requests)
        assert sched.kv.num_free_blocks == sched.kv.num_blocks and not sched.order
        assert sched.lengths.class_mean("realtime") is not None  # it learned from finished requests
        preemptions += result.num_preemptions
    assert preemptions > 0  # 40 blocks for prompts up to 400 tokens: recompute preemption was exercised


def test_same_seed_same_schedule():
    runs = [run_sim(random_workload(40, 10.0, 7), annealing_iterations=30)[0] for _ in range(2)]
    times = [[r.token_times_s for r in res.requests] for res in runs]
    assert times[0] == times[1]


@pytest.mark.parametrize("field,value", [("annealing_iterations", 0), ("annealing_cooling", 1.0),
                                         ("annealing_t0", 0.0), ("annealing_batch_move_prob", 1.5),
                                         ("annealing_window", -1), ("annealing_default_output_len", 0),
                                         ("sarathi_min_chunk", 0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SchedulerConfig(**{field: value}).validate()
