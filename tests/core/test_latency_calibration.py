"""Online calibration of the latency model: one bounded factor per term, neither moved by the other's error, and
prefill's form learnt beside its factor."""
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


def _prefill_samples(truth: LatencyModel, n: int, seed: int = 0) -> list[IterationSample]:
    """Prompt chunks of every size, some after a cached prefix, measured from `truth` with +-10% noise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, prefix = rng.choice([16, 32, 64, 128, 256, 512]), rng.choice([0, 0, 256, 1024])
        out.append(IterationSample(0, 0.0, tokens, truth.prefill_time(tokens, prefix) * rng.uniform(0.9, 1.1), prefix))
    return out


def _profile_with_attention() -> LatencyModel:
    return LatencyModel([0.01], prefill_base_s=0.045, prefill_per_token_s=0.001, prefill_attn_s=1.5e-6)


def test_prefills_form_is_learnt_where_one_factor_can_only_average():
    # What a loaded CPU server showed against its idle profile (docs/results/live-fidelity.md run 7): a lower
    # level and a dearer per-token part. One factor over-prices small chunks and under-prices large ones.
    truth = _profile_with_attention()
    truth.prefill_base_s *= 0.6
    truth.prefill_per_token_s *= 1.3
    class OneFactor(LatencyModel):
        def _reshape_prefill(self, n: int, prefix: float, step: float) -> None:
            pass                                                      # the form held at the profile's

    learnt, one_factor = _profile_with_attention(), OneFactor(**_profile_with_attention().to_dict())
    for s in _prefill_samples(truth, 3000):
        learnt.observe(s)
        one_factor.observe(s)
    shapes = [(16, 0), (64, 0), (256, 0), (512, 0), (64, 1024), (512, 1024)]
    errors = {name: max(abs(m.prefill_time(n, p) / truth.prefill_time(n, p) - 1) for n, p in shapes)
              for name, m in (("learnt", learnt), ("one factor", one_factor))}
    assert errors["learnt"] < 0.03 and errors["one factor"] > 0.2
    assert learnt.prefill_shape[0] < 0.8 and learnt.prefill_shape[1] > 1.05   # lower level, dearer tokens


def test_the_prefill_factor_alone_still_prices_the_reference_chunk():
    model = _profile_with_attention()
    profiled = model.prefill_time(256)
    for s in _prefill_samples(_profile_with_attention(), 50, seed=3):
        model.observe(IterationSample(0, 0.0, s.prefill_tokens, s.seconds * 1.7, s.prefill_ctx))
    assert model.prefill_shape != [1.0, 1.0, 1.0]
    assert model.prefill_time(256) == pytest.approx(model.prefill_factor * profiled)


def test_factors_survive_copy_and_json(tmp_path):
    model = load_profile("paper-4060ti")
    model.observe(IterationSample(2, 0.0, 0, 1.0))
    path = tmp_path / "p.json"
    model.save(path)
    again = LatencyModel.load(path)
    assert again.decode_factor == model.decode_factor == model.copy().decode_factor > 1.0
    model.observe(IterationSample(0, 0.0, 32, 1.0))
    model.save(path)
    assert LatencyModel.load(path).prefill_shape == model.prefill_shape != [1.0, 1.0, 1.0]


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


def test_executed_sample_carries_the_chunks_prefix():
    # A prompt's third 512-token chunk attends over the 1024 tokens cached before it; the sample said 0.
    from sliceserve.core.outputs import SchedulerOutput
    from sliceserve.request import Request, SamplingParams

    long, short = (Request(rid, list(range(n)), SamplingParams(max_tokens=4), 0.0) for rid, n in (("l", 2000), ("s", 64)))
    long.num_computed_tokens, short.num_computed_tokens = 1536, 64   # after update(): the chunks are counted
    one = SchedulerOutput(prefill={"l": 512}, requests={"l": long}).executed_sample(1.0)
    assert (one.prefill_tokens, one.prefill_ctx) == (512, 1024.0)
    two = SchedulerOutput(prefill={"l": 512, "s": 64}, requests={"l": long, "s": short}).executed_sample(1.0)
    model = LatencyModel([0.01], prefill_attn_s=1e-6)
    # Two chunks in one pass: their own attention pairs, priced by one p(n, P) of the effective prefix.
    pairs = 512 * 1024 + 512 * 513 / 2 + 64 * 65 / 2
    assert model.prefill_time(two.prefill_tokens, two.prefill_ctx) == pytest.approx(1e-6 * pairs)


def _chunked_prompt_iterations(truth: LatencyModel, n: int, seed: int = 0) -> list[IterationSample]:
    """A loaded server's prompt-bearing iterations: prompts of 64-2048 tokens in chunks of at most 512 beside
    0-8 decodes, so most chunks of long prompts come after a cached prefix; +-10% noise."""
    rng = random.Random(seed)
    out: list[IterationSample] = []
    while len(out) < n:
        length, done = int(rng.lognormvariate(math.log(400), 0.7)) + 64, 0
        while done < length and len(out) < n:
            chunk = min(512, length - done)
            k, ctx = rng.randint(0, 8), rng.uniform(50, 600)
            shape = IterationSample(k, ctx if k else 0.0, chunk, 0.0, prefill_ctx=float(done))
            shape.seconds = truth.sample_time(shape) * rng.uniform(0.9, 1.1)
            out.append(shape)
            done += chunk
    return out


def test_chunked_prompts_leave_a_fresh_prompts_estimate_where_it_was():
    # The live server's prefill factor had drifted to 1.24x a fresh profile (p(256) 1.30x after 7 min of
    # edge-mix): the model priced a chunk by its size alone, and the long prompts' later chunks, which attend
    # over their cached prefix (2-3x the first chunk's cost on the CPU), ratcheted the one prefill factor up.
    truth = _cpu_like()
    truth.prefill_quad_s, truth.prefill_attn_s = 0.0, 5e-6     # the CPU's ratio of attention to per-token work
    with_prefix, without = truth.copy(), truth.copy()
    # What a fit of prefix-0 chunks by n alone gives: the same curve at no prefix (n**2 / 2 of the pairs).
    without.prefill_attn_s, without.prefill_quad_s, without.prefill_per_token_s = 0.0, 2.5e-6, 0.004 + 2.5e-6
    samples = _chunked_prompt_iterations(truth, 1500)
    for s in samples:
        with_prefix.observe(s)
        without.observe(IterationSample(s.num_decode, s.decode_ctx, s.prefill_tokens, s.seconds))
    assert with_prefix.prefill_time(256) == pytest.approx(truth.prefill_time(256), rel=0.05)
    assert without.prefill_time(256) > 1.2 * truth.prefill_time(256)   # the ratchet the prefix term removes
