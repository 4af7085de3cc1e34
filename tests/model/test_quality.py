"""Quality of the CPU default on the embedded model: perplexity of int8 within 3 % of fp32's on shipped prose."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

PROSE = Path(__file__).resolve().parents[1] / "data" / "public_domain_prose.txt"


@pytest.mark.slow
def test_int8_perplexity_within_3_percent_of_fp32():
    from sliceserve.model.loader import load_model
    from sliceserve.model.quant.quality import perplexity, read_prose

    torch.set_num_threads(1)
    try:
        fp32 = load_model(dtype="float32", num_threads=1, kv_cache_memory_bytes=64 << 20)
    except ValueError as exc:   # the embedded model's package is absent
        pytest.skip(str(exc))
    ids = fp32.tokenizer.encode(read_prose(PROSE))
    assert len(ids) > 1000          # a few KB of text: enough tokens for a stable figure
    ref = perplexity(fp32, ids)
    del fp32
    int8 = load_model(num_threads=1, kv_cache_memory_bytes=64 << 20)
    assert int8.representation == "int8-dynamic"
    got = perplexity(int8, ids)
    # A 135M instruct model on Austen: far from uniform (49152) and far from memorised (1).
    assert 3 < ref < 100
    assert abs(got / ref - 1) <= 0.03, (got, ref)
