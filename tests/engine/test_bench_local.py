"""bench --engine local's pure parts: synthetic prompts and the SLO-scale rule (no model needed)."""
from __future__ import annotations

import pytest

from sliceserve.bench.local import REFERENCE_L1_S, derive_slo_scale, synthetic_requests
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
    assert derive_slo_scale(LatencyModel([0.070, 0.080])) == pytest.approx(5.0)
    assert derive_slo_scale(LatencyModel([0.007])) == pytest.approx(0.5)
