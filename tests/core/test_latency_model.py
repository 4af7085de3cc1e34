import json
import random

import numpy as np
import pytest

from sliceserve.core.latency import IterationSample, LatencyModel, load_profile


def test_paper_4060ti_profile_values():
    m = load_profile("paper-4060ti")
    # SLICE.md's table: 14 ms at batch 1, 83 ms at 7, 125 ms at 8, 124 ms at 15.
    assert m.decode_time(1) == pytest.approx(0.014)
    assert m.decode_time(7) == pytest.approx(0.083)
    assert m.decode_time(8) == pytest.approx(0.125)
    assert m.decode_time(15) == pytest.approx(0.124)
    assert m.decode_time(0) == 0.0
    # Past the table: linear from the last two entries (124 - 123 = 1 ms per extra request).
    assert m.decode_time(17) == pytest.approx(0.126)
    # Documented prefill assumption: 20 ms + 0.25 ms per token.
    assert m.prefill_time(400) == pytest.approx(0.12)
    assert m.iteration_time(4, 0.0, 400) == pytest.approx(0.05 + 0.12)


def test_builtin_profile_is_copied_not_shared():
    a = load_profile("paper-4060ti")
    a.observe(IterationSample(1, 0.0, 0, 1.0))
    assert load_profile("paper-4060ti").decode_time(1) == pytest.approx(0.014)


def test_fit_recovers_known_coefficients():
    truth = LatencyModel([0.010, 0.015, 0.019, 0.024], ctx_coef_s=2e-6, prefill_base_s=0.005,
                         prefill_per_token_s=1e-4, prefill_quad_s=1e-8)
    rng = random.Random(3)
    samples = []
    for _ in range(200):
        k, ctx = rng.randint(1, 4), rng.uniform(0, 2000)
        samples.append(IterationSample(k, ctx, 0, truth.decode_time(k, ctx) * rng.uniform(0.99, 1.01)))
        n = rng.randint(1, 1500)
        samples.append(IterationSample(0, 0.0, n, truth.prefill_time(n) * rng.uniform(0.99, 1.01)))
    fit = LatencyModel.fit(samples)
    for k in range(1, 5):
        assert fit.decode_table_s[k - 1] == pytest.approx(truth.decode_table_s[k - 1], rel=0.03)
    assert fit.ctx_coef_s == pytest.approx(2e-6, rel=0.1)
    for n in (10, 500, 1500):
        assert fit.prefill_time(n) == pytest.approx(truth.prefill_time(n), rel=0.03)


@pytest.mark.parametrize("per_request, per_iteration", [(2e-6, 0.0), (0.0, 2.5e-6), (1e-6, 2e-6)])
def test_fit_separates_per_request_and_per_iteration_context_slopes(per_request, per_iteration):
    # A CPU's attention grows with every request's context (k * ctx); a launch-bound GPU step runs padded to
    # the batch's context, so its time grows with ctx whatever k is. The fit must tell them apart.
    truth = LatencyModel([0.003, 0.0035, 0.004, 0.004, 0.0042, 0.0042, 0.0045, 0.0045], ctx_coef_s=per_request,
                         ctx_iter_coef_s=per_iteration)
    rng = random.Random(5)
    samples = [IterationSample(k, ctx, 0, truth.decode_time(k, ctx) * rng.uniform(0.99, 1.01))
               for k in range(1, 9) for ctx in (64.0, 256.0, 1024.0, 2048.0) for _ in range(3)]
    fit = LatencyModel.fit(samples)
    assert fit.ctx_coef_s == pytest.approx(per_request, abs=2e-7)
    assert fit.ctx_iter_coef_s == pytest.approx(per_iteration, abs=4e-7)
    for k, ctx in ((1, 100.0), (8, 1500.0), (4, 600.0)):
        assert fit.decode_time(k, ctx) == pytest.approx(truth.decode_time(k, ctx), rel=0.03)


def test_a_cpu_fit_keeps_the_context_slope_per_request():
    # A per-request device (CPU attention), timed as the start-up estimate times it: batch 1-8 at two contexts,
    # 5 % lognormal noise. On this draw the two-slope fit hands the slope to the per-iteration column and
    # over-prices a lone decode at context 430 by 16 %, as a live llama.cpp start-up did (run 4); the CPU fit
    # (`iteration_slope=False`) keeps it per request.
    def level(k: int) -> float:
        return float(np.interp(k, [1, 2, 4, 8], [0.0115, 0.0226, 0.044, 0.087]))

    def truth(k: int, ctx: float) -> float:
        return level(k) + 9e-6 * k * ctx

    rng = random.Random(13)
    samples = [IterationSample(k, ctx, 0, truth(k, ctx) * rng.lognormvariate(0, 0.05))
               for k in range(1, 9) for ctx in (16.0, 256.0)]
    both = LatencyModel.fit(samples)
    cpu = LatencyModel.fit(samples, iteration_slope=False)
    assert both.ctx_iter_coef_s > both.ctx_coef_s
    assert both.decode_time(1, 430.0) / truth(1, 430.0) > 1.10
    assert cpu.ctx_iter_coef_s == 0.0 and cpu.ctx_coef_s == pytest.approx(9e-6, rel=0.25)
    assert cpu.decode_time(1, 430.0) == pytest.approx(truth(1, 430.0), rel=0.05)


def test_padded_context_buckets_set_the_per_iteration_term():
    # CUDA-graph decode pads the context to a bucket and costs what the bucket costs: 3.2 ms up to 256
    # positions, 3.6 ms up to 512, 4.3 ms up to 1024 (an H100 run). A straight line through ctx cannot follow
    # those steps; the bucketed term can.
    buckets = [256, 512, 1024, 2048]
    truth = LatencyModel([0.002], ctx_iter_coef_s=2e-6, ctx_buckets=buckets)
    assert truth.decode_time(1, 100.0) == pytest.approx(0.002 + 2e-6 * 256)
    assert truth.decode_time(1, 255.0) == pytest.approx(0.002 + 2e-6 * 256)    # 256 positions: still bucket 256
    assert truth.decode_time(1, 256.0) == pytest.approx(0.002 + 2e-6 * 512)
    assert truth.decode_time(1, 5000.0) == pytest.approx(0.002 + 2e-6 * 5000)  # past the buckets: unpadded
    samples = [IterationSample(1, float(ctx), 0, truth.decode_time(1, ctx)) for ctx in (64, 256, 1024)]
    fit = LatencyModel.fit(samples, ctx_buckets=buckets)
    line = LatencyModel.fit(samples)
    for ctx in (128.0, 400.0, 700.0, 900.0):
        assert fit.decode_time(1, ctx) == pytest.approx(truth.decode_time(1, ctx), rel=0.01)
    assert abs(line.decode_time(1, 700.0) / truth.decode_time(1, 700.0) - 1) > 0.05   # why buckets matter
    back = LatencyModel.from_dict(fit.to_dict())
    assert back.ctx_buckets == buckets and back.decode_time(1, 400.0) == fit.decode_time(1, 400.0)
    with pytest.raises(ValueError, match="ctx_buckets"):
        LatencyModel([0.002], ctx_buckets=[0, 256])


def test_fit_needs_decode_samples():
    with pytest.raises(ValueError, match="decode-only"):
        LatencyModel.fit([IterationSample(0, 0.0, 10, 0.01)])


def test_json_round_trip(tmp_path):
    m = LatencyModel([0.01, 0.02], ctx_coef_s=1e-6, prefill_base_s=0.003, prefill_per_token_s=2e-5,
                     ctx_iter_coef_s=3e-7, name="dev", notes="measured")
    path = tmp_path / "p.json"
    m.save(path, extra={"device": "cpu"})
    back = load_profile(str(path))
    assert back == m
    assert json.loads(path.read_text())["device"] == "cpu"


def test_observe_moves_toward_measurements():
    m = load_profile("paper-4060ti")
    before = m.decode_time(4)
    for _ in range(30):
        m.observe(IterationSample(4, 0.0, 0, 0.100))
    assert abs(m.decode_time(4) - 0.100) < 0.001 < abs(before - 0.100)
    p_before = m.prefill_time(200)
    m.observe(IterationSample(0, 0.0, 200, 2 * p_before))
    assert p_before < m.prefill_time(200) < 2 * p_before
    # A batch size past the table calibrates too (its time is extrapolated).
    m.observe(IterationSample(40, 0.0, 0, 0.5))
    assert m.decode_factor > 0


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"ctx_coef_s": 0.1}', "decode_table_s"),
    ('{"decode_table_s": [0.01], "bogus": 1}', "unknown field"),
    ('{"decode_table_s": [0.0]}', "positive"),
])
def test_bad_profiles_raise_value_error(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        LatencyModel.load(path)


def test_unknown_profile_name():
    with pytest.raises(ValueError, match="unknown latency profile"):
        load_profile("no-such-device")
    with pytest.raises(ValueError, match="not found"):
        load_profile("/nonexistent/profile.json")


def test_scale_multiplies_every_prediction():
    m = LatencyModel([0.01, 0.015], ctx_coef_s=1e-6, prefill_base_s=0.005, prefill_per_token_s=1e-4,
                     prefill_quad_s=1e-8, ctx_iter_coef_s=2e-6, ctx_buckets=[256, 512])
    before = [m.iteration_time(k, ctx, n) for k, ctx, n in ((1, 100.0, 0), (2, 400.0, 0), (0, 0.0, 300), (2, 300.0, 64))]
    m.scale(1.5)
    after = [m.iteration_time(k, ctx, n) for k, ctx, n in ((1, 100.0, 0), (2, 400.0, 0), (0, 0.0, 300), (2, 300.0, 64))]
    assert after == pytest.approx([1.5 * t for t in before])
