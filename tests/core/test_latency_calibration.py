"""Online calibration of the latency model: one bounded factor per term, neither moved by the other's error."""
from __future__ import annotations

import math
import random

import pytest

from sliceserve.core.latency import FACTOR_BOUNDS, IterationSample, LatencyModel, load_profile


def _cpu_like() -> LatencyModel:
    # A CPU-shaped model: 55 ms decode steps, ~4 ms per prompt token.
    return LatencyModel([0.055, 0.060, 0.066, 0.070, 0.075, 0.080, 0.085, 0.090], ctx_coef_s=2e-6,
                        prefill_base_s=0.02, prefill_per_token_s=0.004, prefill_quad_s=1e-6)


def _loaded_server_iterations(truth: LatencyModel, n: int, seed: int = 0) -> list[IterationSample]:
    """What a loaded server runs: mostly decode-only steps, some with a prompt chunk beside them, few
    prefill-only; each measured from `truth` with +-10% noise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k, ctx = rng.randint(1, 8), rng.uniform(50, 600)
        kind = rng.random()
        if kind < 0.8:
            shape = (k, ctx, 0)
        elif kind < 0.97:
            shape = (k, ctx, rng.choice([16, 64, 128, 256]))
        else:
            shape = (0, 0.0, rng.choice([64, 256]))
        out.append(IterationSample(*shape, truth.iteration_time(*shape) * rng.uniform(0.9, 1.1)))
    return out


def test_decode_slows_2x_and_the_prefill_estimate_stays():
    model = _cpu_like()
    truth = _cpu_like()
    truth.decode_table_s = [2 * t for t in truth.decode_table_s]
    truth.ctx_coef_s *= 2
    p256 = model.prefill_time(256)
    for s in _loaded_server_iterations(truth, 2000):
        model.observe(s)
    assert model.decode_time(4, 300.0) == pytest.approx(truth.decode_time(4, 300.0), rel=0.06)
    assert model.prefill_time(256) == pytest.approx(p256, rel=0.05)     # unmoved by decode's error


def test_prefill_slows_and_decode_stays():
    model = _cpu_like()
    truth = _cpu_like()
    truth.prefill_per_token_s *= 1.5
    l4 = model.decode_time(4, 300.0)
    for s in _loaded_server_iterations(truth, 3000, seed=1):
        model.observe(s)
    assert model.prefill_time(256) == pytest.approx(truth.prefill_time(256), rel=0.08)
    assert model.decode_time(4, 300.0) == pytest.approx(l4, rel=0.03)


def test_one_step_is_capped_and_the_factors_are_bounded():
    model = _cpu_like()
    model.observe(IterationSample(1, 0.0, 0, 100 * model.decode_time(1)))   # a 100x stall
    assert model.decode_factor == pytest.approx(math.exp(model.calibration_cap))
    for _ in range(1000):
        model.observe(IterationSample(1, 0.0, 0, 100.0))
        model.observe(IterationSample(0, 0.0, 256, 1e-6))
    assert model.decode_factor == FACTOR_BOUNDS[1] and model.prefill_factor == FACTOR_BOUNDS[0]


def test_calibration_off_with_a_zero_cap():
    model = _cpu_like()
    model.calibration_cap = 0.0
    model.observe(IterationSample(2, 10.0, 64, 5.0))
    assert (model.decode_factor, model.prefill_factor) == (1.0, 1.0)


def test_factors_survive_copy_and_json(tmp_path):
    model = load_profile("paper-4060ti")
    model.observe(IterationSample(2, 0.0, 0, 1.0))
    path = tmp_path / "p.json"
    model.save(path)
    again = LatencyModel.load(path)
    assert again.decode_factor == model.decode_factor == model.copy().decode_factor > 1.0


def test_bucketed_runner_is_charged_the_bucket_of_the_longest_context():
    # A CUDA-graph runner pads the whole step to the bucket of its longest sequence; before, the model charged
    # the bucket of the mean context (here 256 instead of 1024).
    model = LatencyModel([0.003, 0.003], ctx_iter_coef_s=1e-6, ctx_buckets=[256, 512, 1024])
    assert model.decode_time(2, 200.0, ctx_max=600.0) == pytest.approx(0.003 + 1e-6 * 1024)
    assert model.decode_time(2, 200.0) == pytest.approx(0.003 + 1e-6 * 256)   # longest unknown: the mean's
    unpadded = LatencyModel([0.003, 0.003], ctx_iter_coef_s=1e-6)
    assert unpadded.decode_time(2, 200.0, ctx_max=600.0) == pytest.approx(0.003 + 1e-6 * 200)


def test_executed_sample_carries_the_longest_context():
    from sliceserve.core.outputs import SchedulerOutput
    from sliceserve.request import Request, SamplingParams

    reqs = {}
    for rid, n in (("a", 100), ("b", 500)):
        r = Request(rid, list(range(n)), SamplingParams(max_tokens=4), 0.0)
        r.num_computed_tokens = n + 1          # after update(): the decode token is counted
        reqs[rid] = r
    sample = SchedulerOutput(decode=["a", "b"], requests=reqs).executed_sample(0.01)
    assert (sample.decode_ctx, sample.decode_ctx_max) == (300.0, 500)
