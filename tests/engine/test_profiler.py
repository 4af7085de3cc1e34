"""The profiler: it recovers a known device from a simulated executor, and on a tiny real model writes a
profile that `sliceserve simulate --profile` can load."""
from __future__ import annotations

import json

import pytest

from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.model.profiler import ProfileGrid, batch_sizes_up_to, default_grid, measure
from sliceserve.sim import SimulatedExecutor


def test_batch_sizes_and_grid_validation():
    assert batch_sizes_up_to(32) == (*range(1, 17), 24, 32)
    assert batch_sizes_up_to(12) == tuple(range(1, 13))
    assert batch_sizes_up_to(64) == (*range(1, 17), 24, 32, 48, 64)
    assert batch_sizes_up_to(1) == (1,) and batch_sizes_up_to(5) == (1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="two different context"):
        ProfileGrid((1, 2), (128,), (32,))
    with pytest.raises(ValueError, match="positive integers"):
        default_grid(4, (128, 0), (32,))


def test_fit_recovers_a_simulated_device():
    # A chunk's attention over its cached prefix costs (prefill_attn_s): the profile times chunks after a
    # prefix too, and the fit prices a long prompt's later chunks (a model of n alone missed them 2-3x live).
    device = LatencyModel([0.010, 0.018, 0.024, 0.030, 0.035, 0.040, 0.044, 0.048], ctx_coef_s=2e-6,
                          prefill_base_s=0.015, prefill_per_token_s=3e-4, prefill_attn_s=2e-7)
    grid = default_grid(8, (64, 256, 512), (16, 64, 256), prefixes=(512,))
    samples, skipped = measure(SimulatedExecutor(device), grid, num_kv_blocks=512, block_size=16,
                               max_model_len=1024, progress=False)
    assert not skipped and len(samples) == grid.num_points
    fitted = LatencyModel.fit(samples)
    for k in (1, 2, 4, 8):
        for ctx in (64, 512):
            assert fitted.decode_time(k, ctx) == pytest.approx(device.decode_time(k, ctx), rel=1e-6)
    assert fitted.ctx_coef_s == pytest.approx(2e-6, rel=1e-6)
    for n in (16, 100, 256):
        for prefix in (0, 300, 700):
            assert fitted.prefill_time(n, prefix) == pytest.approx(device.prefill_time(n, prefix), rel=1e-6)
    assert device.prefill_time(256, 700) > 1.2 * device.prefill_time(256)   # the prefix matters here


def test_points_beyond_the_kv_cache_are_skipped():
    device = LatencyModel([0.01, 0.02])
    grid = ProfileGrid((1, 2), (16, 200), (16, 300), repeats=1, warmup=0)
    # 16 blocks of 16 tokens: 2 x 201 tokens (26 blocks) and a 300-token chunk do not fit.
    samples, skipped = measure(SimulatedExecutor(device), grid, num_kv_blocks=16, block_size=16,
                               max_model_len=256, progress=False)
    assert len(skipped) == 2 and len(samples) == 4
    assert any("k=2 ctx=200" in s for s in skipped) and any("n=300" in s for s in skipped)


def test_quick_profile_of_a_tiny_model_is_loadable(tiny_loaded, tmp_path):
    pytest.importorskip("torch")
    from sliceserve.model.profiler import profile_loaded

    model, extra = profile_loaded(tiny_loaded, default_grid(quick=True, contexts=(16, 64), chunks=(16, 64), prefixes=(32,)),
                                  progress=False)
    path = tmp_path / "profile.json"
    model.save(path, extra)
    loaded = load_profile(str(path))
    assert loaded.decode_table_s == model.decode_table_s and len(loaded.decode_table_s) == 4
    assert all(0 < t < 5 for t in loaded.decode_table_s) and loaded.prefill_time(64) > 0
    assert loaded.ctx_iter_coef_s == 0.0    # a CPU profile prices context per request (LatencyModel.fit)
    data = json.loads(path.read_text())
    assert data["device"]["model_name"] == tiny_loaded.model_name
    assert data["device"]["torch_threads"] == 1
    # batch sizes (1, 2, 3, 4) x 2 contexts, plus 2 chunk sizes after no cached token and after 32
    assert len(data["samples"]) == 4 * 2 + 2 * 2


def test_fit_keeps_decode_levels_non_decreasing_under_noise():
    from sliceserve.core.latency import IterationSample

    # A contended CPU stretched the batch-1 and batch-4 points: least squares alone would give l(2) < l(1)
    # and l(8) < l(4).
    levels = {1: 0.030, 2: 0.020, 4: 0.040, 8: 0.035, 16: 0.060}
    samples = [IterationSample(k, float(ctx), 0, level + 1e-6 * k * ctx)
               for k, level in levels.items() for ctx in (64, 256)]
    fitted = LatencyModel.fit(samples)
    table = fitted.decode_table_s
    assert all(a <= b + 1e-12 for a, b in zip(table, table[1:])), table
    # Violating neighbours are pooled to their mean; the rest is untouched.
    assert table[0] == pytest.approx(0.025) and table[1] == pytest.approx(0.025)
    assert table[3] == pytest.approx(0.0375) and table[7] == pytest.approx(0.0375)
    assert table[15] == pytest.approx(0.060)
    assert fitted.ctx_coef_s == pytest.approx(1e-6, rel=1e-6)


def test_spread_contexts_keep_the_mean_and_span_the_range():
    from sliceserve.model.profiler import spread_contexts

    lengths = spread_contexts(5, 400, 0.5)
    assert lengths == [200, 300, 400, 500, 600]
    assert sum(spread_contexts(16, 256, 0.5)) / 16 == pytest.approx(256, abs=1)
    assert spread_contexts(1, 400, 0.5) == [400] and spread_contexts(4, 64, 0.0) == [64] * 4
