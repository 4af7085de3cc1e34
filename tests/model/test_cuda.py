"""The runner on CUDA (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch

from sliceserve.model.loader import load_model
from sliceserve.request import SamplingParams
from tests.model.helpers import hf_greedy, run_engine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_fp32_matches_transformers(tiny_qwen2_dir):
    loaded = load_model(str(tiny_qwen2_dir), device="cuda", dtype="float32", kv_cache_memory_bytes=1 << 24)
    assert loaded.runner.kv_caches[0][0].is_cuda
    prompt = loaded.tokenizer.encode("Paris is the capital of")
    reqs, _ = run_engine(loaded, [prompt, loaded.tokenizer.encode("Hello")], SamplingParams(max_tokens=16, ignore_eos=True),
                         max_num_batched_tokens=4)
    assert reqs[0].output_token_ids == hf_greedy(tiny_qwen2_dir, prompt, 16)


def test_cuda_half_precision_defaults_and_agrees_early(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cuda", kv_cache_memory_bytes=1 << 24)
    assert loaded.dtype in ("bfloat16", "float16")
    prompt = loaded.tokenizer.encode("The quick brown fox jumps over")
    reqs, _ = run_engine(loaded, [prompt], SamplingParams(max_tokens=4, ignore_eos=True))
    # Reduced precision may drift later; the first token of decisive random weights must agree.
    assert reqs[0].output_token_ids[0] == hf_greedy(tiny_llama_dir, prompt, 1)[0]
