"""Engine front-end fixtures: one tiny random Llama loaded once per module run (torch threads = 1)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_loaded(tiny_llama_dir):
    pytest.importorskip("torch")
    from sliceserve.model.loader import load_model

    # A small KV cache keeps allocation cheap; 128 blocks x 16 = 2048 token slots.
    return load_model(str(tiny_llama_dir), dtype="float32", num_threads=1,  # the reference path
                      kv_cache_memory_bytes=_kv_bytes(tiny_llama_dir, 128))


def _kv_bytes(model_dir, num_blocks: int) -> int:
    import json

    cfg = json.loads((model_dir / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    # K and V, fp32, per layer per block.
    return num_blocks * 2 * cfg["num_hidden_layers"] * 16 * cfg["num_key_value_heads"] * head_dim * 4


@pytest.fixture(scope="session")
def policy() -> str:
    """The default policy ("slice") once it is registered; vLLM-style until then."""
    from sliceserve.core.policies import available_policies

    return "slice" if "slice" in available_policies() else "vllm"
