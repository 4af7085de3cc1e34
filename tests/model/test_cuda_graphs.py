"""The padded static-shape decode path (sliceserve.model.cuda_graphs): uncaptured on CPU, replayed as CUDA
graphs on a GPU. Both must give the eager path's tokens, padding rows and context padding included."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sliceserve.model.cuda_graphs import DecodeBuckets, default_buckets
from sliceserve.model.loader import load_model
from sliceserve.model.runner import ModelRunner
from sliceserve.request import SamplingParams
from tests.model.helpers import hf_greedy, run_engine

TEXTS = ["Once upon a time there was a little robot who", "Edge devices serve language models",
         "def fibonacci(n):", "Why is the sky blue? Because", "1, 2, 3,"]


def _with_runner(loaded, buckets: DecodeBuckets | None, *, cuda_graphs: bool = False):
    """`loaded` with a fresh runner over a NaN-filled cache (one spare block when static): any read of a slot
    that was never written would turn a row's logits into NaN and its greedy token into garbage."""
    n, old = loaded.num_kv_blocks, loaded.runner.kv_caches[0][0]
    shape = (n + (buckets is not None), *old.shape[1:])
    caches = [(torch.full(shape, float("nan"), dtype=old.dtype, device=old.device),
               torch.full(shape, float("nan"), dtype=old.dtype, device=old.device)) for _ in loaded.runner.kv_caches]
    runner = ModelRunner(loaded.runner.model, caches, loaded.block_size, tokenizer=loaded.tokenizer,
                         device=str(old.device), num_kv_blocks=n, decode_buckets=buckets, cuda_graphs=cuda_graphs)
    return replace(loaded, runner=runner)


def _count_static(loaded) -> list[int]:
    """[steps the static path ran, decode-only steps it passed to eager]: proof the test exercises both."""
    counts = [0, 0]
    static = loaded.runner.static_decode
    run = static.run

    def counted(*args):
        out = run(*args)
        counts[out is None] += 1
        return out

    static.run = counted
    return counts


def test_default_buckets():
    b = default_buckets(32, 8192, 16)
    assert b.batch_sizes == (1, 2, 4, 8, 16, 24, 32)
    assert b.context_lens == (256, 512, 1024, 2048, 4096, 8192)
    assert default_buckets(64, 1000, 16).context_lens == (256, 512, 1008)
    assert default_buckets(64, 1000, 16).batch_sizes == (1, 2, 4, 8, 16, 24, 32, 48, 64)
    assert b.pick(3, 300) == (4, 512) and b.pick(33, 10) is None and b.pick(1, 8193) is None


def test_static_decode_equals_eager_on_cpu(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), dtype="float32", kv_cache_memory_bytes=1 << 22)
    prompts = [loaded.tokenizer.encode(t) for t in TEXTS]
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    eager, _ = run_engine(_with_runner(loaded, None), prompts, params)
    # Batch buckets 2, 4, 8: 5 sequences pad to 8, a lone one to 2. Context buckets up to 32: longer
    # contexts (prompts of 4-11 tokens + 24 outputs) fall back to eager mid-run.
    static = _with_runner(loaded, DecodeBuckets((2, 4, 8), (16, 32)))
    counts = _count_static(static)
    together, _ = run_engine(static, prompts, params)
    assert [r.output_token_ids for r in together] == [r.output_token_ids for r in eager]
    staggered, _ = run_engine(static, prompts, params, stagger=3)
    assert [r.output_token_ids for r in staggered] == [r.output_token_ids for r in eager]
    assert counts[0] > 10 and counts[1] > 0
    assert eager[0].output_token_ids == hf_greedy(tiny_llama_dir, prompts[0], 24)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_equals_eager(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cuda", dtype="float32", kv_cache_memory_bytes=1 << 22,
                        cuda_graphs=False)
    assert loaded.runner.static_decode is None
    prompts = [loaded.tokenizer.encode(t) for t in TEXTS]
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    eager, _ = run_engine(_with_runner(loaded, None), prompts, params)
    graphed = _with_runner(loaded, DecodeBuckets((2, 4, 8), (16, 32)), cuda_graphs=True)
    assert len(graphed.runner.static_decode.graphs) == 6
    counts = _count_static(graphed)
    together, _ = run_engine(graphed, prompts, params)
    staggered, _ = run_engine(graphed, prompts, params, stagger=3)
    assert [r.output_token_ids for r in together] == [r.output_token_ids for r in eager]
    assert [r.output_token_ids for r in staggered] == [r.output_token_ids for r in eager]
    assert counts[0] > 10 and counts[1] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.slow
def test_cuda_graphs_embedded_model_match_transformers_and_eager():
    from pathlib import Path

    from sliceserve.model.loader import default_model_path
    from sliceserve.model.weights import converted_gguf_dir

    loaded = load_model(device="cuda", dtype="float32", kv_cache_memory_bytes=32 << 20)   # graphs by default
    static = loaded.runner.static_decode
    assert static is not None and static.graphs and static.capture_s > 0
    tok = loaded.tokenizer
    questions = ["What is the capital of France?", "Name three colours.", "Write a haiku about the sea."]
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]) for q in questions]
    counts = _count_static(loaded)
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    graphed, _ = run_engine(loaded, prompts, params)
    assert counts[0] > 0
    eager = load_model(device="cuda", dtype="float32", kv_cache_memory_bytes=32 << 20, cuda_graphs=False)
    plain, _ = run_engine(eager, prompts, params)
    assert [r.output_token_ids for r in graphed] == [r.output_token_ids for r in plain]
    # Against transformers with EOS honoured (its min_new_tokens would forbid the EOS ignore_eos keeps).
    alone, _ = run_engine(loaded, prompts[:1], SamplingParams(max_tokens=24), eos=True)
    hf_dir = converted_gguf_dir(Path(default_model_path()))
    assert alone[0].output_token_ids == hf_greedy(hf_dir, prompts[0], 24, stop_at_eos=True, device="cuda")
    assert "Paris" in tok.decode(alone[0].output_token_ids)
