"""Reading a Hugging Face directory's weights, and converting a GGUF file into such a directory once."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from sliceserve.model.cache import cached_dir


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir}: not a model directory (no config.json)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: corrupt config ({exc})") from None


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{index}: corrupt index ({exc})") from None
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        raise ValueError(f"{model_dir}: no weights found (expected *.safetensors or pytorch_model.bin)")
    return files


def read_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(model_dir):
        try:
            if path.suffix == ".safetensors":
                state.update(load_file(str(path)))
            else:
                state.update(torch.load(str(path), map_location="cpu", weights_only=True))
        except Exception as exc:  # safetensors and torch raise assorted types for damaged files
            raise ValueError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    return state


def converted_gguf_dir(gguf_path: Path) -> Path:
    """A safetensors HF directory (config, weights, tokenizer) made from `gguf_path`, cached."""
    def build(tmp: Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        parent, name = str(gguf_path.parent), gguf_path.name
        try:
            loaded = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(parent, gguf_file=name)
        except Exception as exc:
            raise ValueError(f"{gguf_path}: cannot read GGUF ({type(exc).__name__}: {exc})") from None
        # transformers refuses save_pretrained on a GGUF-loaded model: rebuild the class, copy the weights.
        config = AutoConfig.from_pretrained(parent, gguf_file=name)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    return cached_dir(gguf_path, "model", build)
