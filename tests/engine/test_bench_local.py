"""bench --engine local's pure parts: synthetic prompts and the SLO-scale rules (no model needed)."""
from __future__ import annotations

import pytest

from sliceserve.bench.device_scale import REFERENCE_L1_S, REFERENCE_PREFILL_S, device_scale, latency_scale
from sliceserve.bench.local import synthetic_requests
from sliceserve.core.latency import LatencyModel
from sliceserve.workload import generate


def test_synthetic_prompts_are_identical_per_policy_and_fit_max_model_len():
    wl = generate("edge-mix", rate=4.0, duration_s=10.0, seed=3)
    a, capped_a = synthetic_requests(wl, "slice", vocab_size=500, max_model_len=300, seed=1)
    b, capped_b = synthetic_requests(wl, "orca", vocab_size=500, max_model_len=300, seed=1)
    assert [r.prompt_token_ids for r in a] == [r.prompt_token_ids for r in b]
    assert {r.req_id.split("-")[0] for r in a} == {"slice"}
    assert capped_a == capped_b == sum(s.prompt_len + s.output_len > 300 for s in wl.specs) > 0
    for req, spec in zip(a, wl.specs):
        assert req.max_total_tokens <= 300 and all(0 <= t < 500 for t in req.prompt_token_ids)
        if spec.prompt_len + spec.output_len <= 300:  # untouched when it fits
            assert (req.num_prompt_tokens, req.max_tokens) == (spec.prompt_len, spec.output_len)
        assert req.sampling_params.ignore_eos
    other_seed, _ = synthetic_requests(wl, "slice", vocab_size=500, max_model_len=300, seed=2)
    assert [r.prompt_token_ids for r in other_seed] != [r.prompt_token_ids for r in a]


def test_slo_scale_is_the_ratio_of_single_decode_steps():
    assert REFERENCE_L1_S == pytest.approx(0.014)
    assert latency_scale(LatencyModel([0.070, 0.080])).slo == pytest.approx(5.0)
    assert latency_scale(LatencyModel([0.007])).slo == pytest.approx(0.5)


def test_slo_scale_reads_the_decode_step_at_the_reference_prompts_context():
    # A quick profile whose fit put the level near zero and the cost in the context slope (2.4 ms at context 0,
    # 9.8 ms at 256, as one did on the 2-vCPU CPU): scaled at context 0 every TPOT bound fell below one step.
    fit = LatencyModel([0.0024], ctx_iter_coef_s=(0.0098 - 0.0024) / 256)
    assert latency_scale(fit).slo == pytest.approx(0.0098 / 0.014)


def test_ttft_scale_follows_prefill_but_never_below_the_decode_scale():
    assert REFERENCE_PREFILL_S == pytest.approx(0.020 + 0.00025 * 256)
    # A CPU-like device: decode 4.5x the reference, a 256-token prompt 12.7x.
    cpu = LatencyModel([0.063], prefill_base_s=0.051, prefill_per_token_s=0.00397)
    scale = latency_scale(cpu)
    assert scale.slo == pytest.approx(4.5)
    assert scale.ttft == pytest.approx((0.051 + 0.00397 * 256) / REFERENCE_PREFILL_S)
    # Prefill relatively faster than decode: TTFT still stretches with the decode step.
    fast_prefill = LatencyModel([0.028], prefill_base_s=0.001, prefill_per_token_s=0.0001)
    assert latency_scale(fast_prefill).ttft == latency_scale(fast_prefill).slo == pytest.approx(2.0)
    # No prefill model (a server that does not report it): one factor.
    assert device_scale(0.028, None).ttft == pytest.approx(2.0)


def test_given_scales_win_and_slo_scale_alone_scales_every_bound():
    cpu = LatencyModel([0.063], prefill_base_s=0.051, prefill_per_token_s=0.00397)
    assert (latency_scale(cpu, slo_scale=3.0).slo, latency_scale(cpu, slo_scale=3.0).ttft) == (3.0, 3.0)
    assert latency_scale(cpu, slo_scale=3.0, ttft_scale=9.0).ttft == 9.0
    assert latency_scale(cpu, ttft_scale=7.0).ttft == 7.0 and latency_scale(cpu, ttft_scale=7.0).slo == pytest.approx(4.5)
    with pytest.raises(ValueError, match="--ttft-scale must be positive"):
        latency_scale(cpu, ttft_scale=0.0)
    with pytest.raises(ValueError, match="pass --slo-scale"):
        device_scale(None, 0.1)


def test_preset_scaled_with_a_separate_ttft_factor():
    from sliceserve.workload import get_preset

    rt = {m.name: m.slo_class.slo for m in get_preset("edge-mix", 4.5, 12.0)}["realtime"]
    assert (rt.ttft_s, rt.tpot_s) == (pytest.approx(0.5 * 12.0), pytest.approx(0.050 * 4.5))
    same = {m.name: m.slo_class.slo for m in get_preset("edge-mix", 4.5)}["realtime"]
    assert same.ttft_s == pytest.approx(0.5 * 4.5)
