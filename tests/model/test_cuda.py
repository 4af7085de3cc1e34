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


def test_cuda_batched_chunked_preempted_equal_alone(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cuda", dtype="float32", kv_cache_memory_bytes=1 << 22)
    texts = ["Once upon a time there was a little robot who", "Edge devices serve language models",
             "def fibonacci(n):", "Why is the sky blue? Because"]
    prompts = [loaded.tokenizer.encode(t) for t in texts]
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    alone = [run_engine(loaded, [p], params)[0][0].output_token_ids for p in prompts]
    chunked, _ = run_engine(loaded, prompts, params, max_num_batched_tokens=5, stagger=3)
    assert [r.output_token_ids for r in chunked] == alone
    preempted, engine = run_engine(loaded, prompts, params, num_kv_blocks=7, max_num_batched_tokens=16)
    assert engine.scheduler.num_preemptions > 0
    assert [r.output_token_ids for r in preempted] == alone


@pytest.mark.slow
def test_cuda_embedded_model_matches_transformers_on_cuda():
    from pathlib import Path

    from sliceserve.model.loader import default_model_path
    from sliceserve.model.weights import converted_gguf_dir

    loaded = load_model(device="cuda", dtype="float32", kv_cache_memory_bytes=32 << 20)
    tok = loaded.tokenizer
    prompt = list(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                          add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    reqs, _ = run_engine(loaded, [prompt], SamplingParams(max_tokens=24), eos=True)
    expected = hf_greedy(converted_gguf_dir(Path(default_model_path())), prompt, 24, stop_at_eos=True, device="cuda")
    assert reqs[0].output_token_ids == expected
    assert "Paris" in tok.decode(reqs[0].output_token_ids)


def test_cuda_sampling_is_seeded_and_batch_independent(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cuda", dtype="float32", kv_cache_memory_bytes=1 << 22)
    prompts = [loaded.tokenizer.encode(t) for t in ["The robot turned left and", "A short poem:"]]
    params = [SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=7 + i, ignore_eos=True)
              for i in range(len(prompts))]
    alone = [run_engine(loaded, [p], [sp])[0][0].output_token_ids for p, sp in zip(prompts, params)]
    together, _ = run_engine(loaded, prompts, params)
    assert [r.output_token_ids for r in together] == alone
