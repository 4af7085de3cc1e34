"""Shared fixtures: tiny random Llama-family HF directories that carry the embedded model's tokenizer.

The tokenizer comes from the embedded SmolLM2 GGUF (converted once into the sliceserve cache, see
sliceserve/model/cache.py), so text round-trips and chat templates work while the weights stay tiny.
"""
from __future__ import annotations

from pathlib import Path

import pytest


def _tokenizer_dir() -> Path:
    from sliceserve.model.cache import gguf_tokenizer_dir
    from sliceserve.model.loader import default_model_path

    return gguf_tokenizer_dir(default_model_path())


def _save_tiny(out: Path, config) -> Path:
    """Random weights for `config` (seeded), saved with the embedded tokenizer as an HF directory."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(_tokenizer_dir()))
    config.vocab_size = len(tok)
    config.bos_token_id = tok.bos_token_id
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    # Random init at std 0.02 gives near-uniform logits; wider weights make greedy choices decisive,
    # so comparisons with transformers test the arithmetic rather than float tie-breaking.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.15)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)   # Qwen2's q/k/v biases start at zero: make them matter
            else:
                p.add_(torch.randn_like(p) * 0.1)  # norm weights
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
                         rms_norm_eps=1e-5)
    return _save_tiny(tmp_path_factory.mktemp("tiny_llama"), config)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False)
    return _save_tiny(tmp_path_factory.mktemp("tiny_qwen2"), config)
