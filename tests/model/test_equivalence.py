"""Greedy output equals transformers' own generate, token for token."""
from __future__ import annotations

import pytest

from sliceserve.model.loader import load_model
from sliceserve.request import SamplingParams
from tests.model.helpers import hf_greedy, run_engine

PROMPTS = ["The quick brown fox jumps over", "Paris is the capital of", "1, 2, 3, 4,"]


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_greedy_matches_transformers(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    loaded = load_model(str(model_dir), dtype="float32", kv_cache_memory_bytes=1 << 22)
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    reqs, _ = run_engine(loaded, prompts, SamplingParams(max_tokens=24, ignore_eos=True))
    for prompt, req in zip(prompts, reqs):
        assert req.output_token_ids == hf_greedy(model_dir, prompt, 24)


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 32},
])
def test_rope_scaling_matches_transformers(rope, tiny_llama_dir, tmp_path):
    import json
    import shutil

    for f in tiny_llama_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = {**rope, "rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(str(tmp_path), dtype="float32", kv_cache_memory_bytes=1 << 22)
    prompt = loaded.tokenizer.encode("Position interpolation stretches the rotary embedding over longer text")
    reqs, _ = run_engine(loaded, [prompt], SamplingParams(max_tokens=20, ignore_eos=True))
    assert reqs[0].output_token_ids == hf_greedy(tmp_path, prompt, 20)


@pytest.mark.slow
def test_embedded_model_matches_transformers():
    from pathlib import Path

    from sliceserve.model.loader import default_model_path
    from sliceserve.model.weights import converted_gguf_dir

    loaded = load_model(dtype="float32", kv_cache_memory_bytes=32 << 20)
    tok = loaded.tokenizer
    prompt = list(tok.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                          add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    reqs, _ = run_engine(loaded, [prompt], SamplingParams(max_tokens=16), eos=True)
    expected = hf_greedy(converted_gguf_dir(Path(default_model_path())), prompt, 16, stop_at_eos=True)
    assert reqs[0].output_token_ids == expected
    assert tok.decode(reqs[0].output_token_ids).strip()
