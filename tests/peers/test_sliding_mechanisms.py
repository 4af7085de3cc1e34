"""SlidingServe's mechanisms in isolation: knapsack vs brute force, chunker vs an exact latency model,
predictor error on held-out iterations, sorter order. Pure Python + numpy (no torch)."""
from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sliceserve.core.latency import LatencyModel
from sliceserve.core.sliding.chunker import choose_chunks, chunk_grid
from sliceserve.core.sliding.knapsack import knapsack_01, select_within
from sliceserve.core.sliding.predictor import (DECODE_ONLY, MIXED, PREFILL_HEAVY, BatchFeatures,
                                               BatchLatencyPredictor, mean_abs_pct_error, regime_of)
from sliceserve.core.sliding.sorter import AT_RISK, HOPELESS, SAFE, priority_key, rank, risk_level
from sliceserve.request import Request, SamplingParams
from sliceserve.slo import SLO

EXACT = LatencyModel([0.010 + 0.002 * k for k in range(16)], ctx_coef_s=1e-6, prefill_base_s=0.005,
                     prefill_per_token_s=1e-4, prefill_quad_s=1e-7)


# --- knapsack ------------------------------------------------------------------------------------------
def brute_force(values, weights, capacity) -> float:
    best = 0.0
    for r in range(len(values) + 1):
        for subset in itertools.combinations(range(len(values)), r):
            if sum(weights[i] for i in subset) <= capacity:
                best = max(best, sum(values[i] for i in subset))
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 30)), max_size=9), st.integers(0, 80))
def test_knapsack_matches_brute_force(items, capacity):
    values = [float(v) for v, _ in items]
    weights = [w for _, w in items]
    chosen = knapsack_01(values, weights, capacity)
    assert len(set(chosen)) == len(chosen)
    assert sum(weights[i] for i in chosen) <= capacity
    assert sum(values[i] for i in chosen) == brute_force(values, weights, capacity)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 10), st.floats(0.0, 0.2)), max_size=8), st.floats(0.01, 0.5),
       st.integers(10, 200))
def test_float_knapsack_fits_and_is_optimal_for_rounded_weights(items, capacity, bins):
    values = [v for v, _ in items]
    weights = [w for _, w in items]
    chosen = select_within(values, weights, capacity, bins)
    assert sum(weights[i] for i in chosen) <= capacity + 1e-12  # rounding up never overfills
    unit = capacity / bins
    rounded = [max(0, math.ceil(w / unit - 1e-9)) for w in weights]
    assert math.isclose(sum(values[i] for i in chosen), brute_force(values, rounded, bins), rel_tol=1e-9)


def test_knapsack_prefers_value_over_count():
    # Two light items of value 1 each vs one heavy item of value 3: the heavy one wins.
    assert knapsack_01([1.0, 1.0, 3.0], [5, 5, 10], 10) == [2]


# --- chunker -------------------------------------------------------------------------------------------
def exact_times(k: int, ctx: float):
    def t1(c1: int) -> float:
        return EXACT.iteration_time(k, ctx, c1)

    def t2(c1: int, c2: int) -> float:
        return EXACT.iteration_time(k, ctx + 1, c2)
    return t1, t2


@settings(max_examples=300, deadline=None)
@given(k=st.integers(1, 12), ctx=st.floats(0, 2000), pending=st.integers(0, 2000), cap=st.integers(1, 512),
       step=st.sampled_from([8, 16, 32]),
       budgets=st.lists(st.tuples(st.floats(0.0, 0.2), st.floats(0.0, 0.2)), min_size=1, max_size=8))
def test_chunker_never_breaks_a_keepable_tpot_slack(k, ctx, pending, cap, step, budgets):
    budgets = [(s1, s1 + extra) for s1, extra in budgets]
    t1, t2 = exact_times(k, ctx)
    choice = choose_chunks(t1, t2, budgets, cap, cap, pending, step, min_chunk=16)
    assert 0 <= choice.first <= min(cap, pending)
    assert 0 <= choice.second <= max(0, min(cap, pending - choice.first))
    first_s = t1(choice.first)
    both_s = first_s + t2(choice.first, choice.second)
    keepable = [(s1, s2) for s1, s2 in budgets if t1(0) <= s1 and t1(0) + t2(0, 0) <= s2]
    for s1, s2 in keepable:
        assert first_s <= s1 and both_s <= s2
    if keepable:  # optimal on the grid: no feasible pair carries more tokens
        lim1, lim2 = min(s for s, _ in keepable), min(s for _, s in keepable)
        best = max(a + b for a in chunk_grid(min(cap, pending), step)
                   for b in chunk_grid(max(0, min(cap, pending - a)), step)
                   if t1(a) <= lim1 and t1(a) + t2(a, b) <= lim2)
        assert choice.first + choice.second == best


def test_chunker_looks_ahead_with_a_superlinear_prefill_cost():
    # Only quadratic prefill cost: two balanced chunks carry more tokens than one big chunk and nothing.
    model = LatencyModel([0.01], prefill_quad_s=1e-6)
    t1 = lambda c: model.iteration_time(1, 0, c)  # noqa: E731
    t2 = lambda c1, c2: model.iteration_time(1, 0, c2)  # noqa: E731
    budget = 0.01 + 0.01 + 2 * 0.04  # two decode iterations + room for 0.08 s of prefill in total
    choice = choose_chunks(t1, t2, [(1.0, budget)], 1000, 1000, 10_000, step=10)
    greedy_first = max(c for c in chunk_grid(1000, 10) if t1(c) + t2(c, 0) <= budget)
    assert choice.first + choice.second > greedy_first
    assert abs(choice.first - choice.second) <= 10


def test_chunker_without_budgets_fills_the_cap():
    t1, t2 = exact_times(4, 100)
    assert choose_chunks(t1, t2, [], 256, 256, 1000, 16).first == 256
    assert choose_chunks(t1, t2, [], 256, 256, 40, 16).first == 40


def test_chunker_keeps_prefill_moving_when_every_decode_is_late():
    t1, t2 = exact_times(4, 100)
    assert choose_chunks(t1, t2, [(0.0, 0.0)], 256, 256, 1000, 16, min_chunk=16).first == 16


# --- predictor -----------------------------------------------------------------------------------------
TRUE_COEF = {  # intercept, total, prefill, decode, decode ctx, prefill ctx, num prefills, prefill sq
    DECODE_ONLY: [0.012, 0.0, 0.0, 0.0015, 2e-7, 0.0, 0.0, 0.0],
    MIXED: [0.015, 0.0002, 0.0001, 0.0012, 2e-7, 5e-8, 0.002, 1e-7],
    PREFILL_HEAVY: [0.020, 0.0001, 0.0002, 0.0010, 2e-7, 4e-8, 0.001, 2e-7],
}


def synthetic_batches(n: int, seed: int, noise: float) -> list[tuple[BatchFeatures, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 16))
        ctxs = rng.integers(10, 1500, size=k).tolist()
        chunks = [(int(rng.integers(0, 800)), int(rng.integers(1, 300))) for _ in range(int(rng.integers(0, 3)))]
        if k == 0 and not chunks:
            k, ctxs = 1, [100]
        f = BatchFeatures.of(ctxs, chunks)
        y = float(np.dot(TRUE_COEF[regime_of(f, 128)], f.vector())) * float(rng.lognormal(0.0, noise))
        out.append((f, y))
    return out


def test_predictor_error_on_held_out_iterations():
    prior = LatencyModel([0.02 * (1 + 0.1 * k) for k in range(16)], prefill_per_token_s=3e-4)
    pred = BatchLatencyPredictor(prior, heavy_prefill_tokens=128, window=512, min_samples=24, refit_every=16)
    train, held_out = synthetic_batches(1200, seed=1, noise=0.03), synthetic_batches(300, seed=2, noise=0.03)
    before = mean_abs_pct_error(pred, held_out)
    for f, y in train:
        pred.observe(f, y)
    after = mean_abs_pct_error(pred, held_out)
    per_regime = {r: mean_abs_pct_error(pred, [(f, y) for f, y in held_out if regime_of(f, 128) == r])
                  for r in (DECODE_ONLY, MIXED, PREFILL_HEAVY)}
    print(f"\npredictor held-out MAPE: prior {before:.1%} -> fitted {after:.1%}; per regime "
          + ", ".join(f"{r} {e:.1%}" for r, e in per_regime.items()) + " (noise sd 3%)")
    assert all(pred.is_fitted(r) for r in per_regime)
    assert after < 0.06          # noise alone gives ~2.4% mean absolute error
    assert after < before / 3


def test_predictor_uses_the_prior_until_enough_samples():
    prior = LatencyModel([0.05], prefill_per_token_s=1e-3)
    pred = BatchLatencyPredictor(prior, min_samples=5, window=10, refit_every=5)
    f = BatchFeatures.of([100], [])
    for _ in range(4):
        pred.observe(f, 0.2)
    assert pred.predict(f) == prior.iteration_time(1, 100.0, 0)
    pred.observe(f, 0.2)
    assert math.isclose(pred.predict(f), 0.2, rel_tol=1e-3)


def test_predictor_matrix_agrees_with_rows():
    pred = BatchLatencyPredictor(EXACT, min_samples=24, window=256)
    for f, y in synthetic_batches(200, seed=3, noise=0.02):
        if regime_of(f, 128) != PREFILL_HEAVY:  # leave one regime on the prior
            pred.observe(f, y)
    rows = [f for f, _ in synthetic_batches(50, seed=4, noise=0.0)]
    many = pred.predict_matrix(np.array([f.vector() for f in rows]))
    assert np.allclose(many, [pred.predict(f) for f in rows], rtol=1e-9)


# --- sorter --------------------------------------------------------------------------------------------
def test_risk_levels():
    assert risk_level(math.inf, 1.0, 0.5, True) == SAFE
    assert risk_level(2.0, 1.0, 0.5, True) == SAFE
    assert risk_level(1.2, 1.0, 0.5, True) == AT_RISK
    assert risk_level(0.5, 1.0, 0.5, True) == HOPELESS
    assert risk_level(0.5, 1.0, 0.5, False) == AT_RISK


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, 0.2, 1.0, 5.0]), st.floats(0, 3), st.integers(1, 900),
                          st.floats(0.001, 2.0)), min_size=1, max_size=12), st.booleans())
def test_vector_rank_matches_the_lexicographic_key(specs, relegate):
    now = 3.0
    reqs = [Request(f"r{i}", [1] * plen, SamplingParams(max_tokens=8), arrival_s=arr,
                    slo=SLO(ttft_s=ttft)) for i, (ttft, arr, plen, _) in enumerate(specs)]
    needs = [need for *_, need in specs]
    keys = [priority_key(r, now, need, 0.5, relegate) for r, need in zip(reqs, needs)]
    order = rank(np.array([k[1] for k in keys]), np.array(needs), np.array([k[2] for k in keys]),
                 np.array([r.arrival_s for r in reqs]), 0.5, relegate)
    assert [keys[i] for i in order] == sorted(keys)


# --- batch constructor ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(prompts=st.lists(st.tuples(st.integers(1, 400), st.floats(0.01, 0.3), st.sampled_from([1.0, 100.0])),
                        min_size=1, max_size=6),
       decode_budgets=st.lists(st.floats(0.02, 0.5), max_size=4), k=st.integers(0, 8))
def test_constructor_batch_keeps_every_budget_and_saves_only_the_savable(prompts, decode_budgets, k):
    from sliceserve.core.sliding.constructor import construct

    now, margin = 1.0, 0.05
    queue = [Request(f"p{i}", [1] * n, SamplingParams(max_tokens=4), arrival_s=now, slo=SLO(ttft_s=ttft),
                     utility=u) for i, (n, ttft, u) in enumerate(prompts)]

    def time_with(chunks):  # additive: the decodes plus each chunk's own prefill time
        return EXACT.decode_time(k, 100.0) + sum(EXACT.prefill_time(n) for _, n in chunks)

    chunk_plan = [(queue[0], min(queue[0].num_prompt_tokens, 256))]
    out = construct(now, queue, chunk_plan, decode_budgets, time_with, 512, margin, 200)
    if out.plan is None:
        return
    assert out.triggered
    took = time_with([(0, n) for _, n in out.plan])
    assert sum(n for _, n in out.plan) <= 512
    for budget in decode_budgets:
        assert took <= budget + 1e-12
    for r, n in out.plan:
        assert n == r.num_prompt_tokens
        assert took <= r.slo.ttft_s * (1 - margin) + 1e-12   # every chosen prompt meets its TTFT
