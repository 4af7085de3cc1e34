"""The architecture description read from a Hugging Face config.json, checked against what we support."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# model_type -> whether q/k/v projections carry a bias by default (Qwen2 always does).
SUPPORTED_MODEL_TYPES = {"llama": False, "mistral": False, "qwen2": True}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ArchConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    rope_theta: float
    rope: dict[str, Any] = field(default_factory=dict)  # rope_type plus its parameters
    sliding_window: int | None = None

    @property
    def rope_type(self) -> str:
        return self.rope.get("rope_type", self.rope.get("type", "default"))


def _rope_settings(cfg: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    # transformers 5 writes `rope_parameters` (theta inside); older configs use `rope_theta` + `rope_scaling`.
    params = dict(cfg.get("rope_parameters") or {})
    scaling = cfg.get("rope_scaling") or {}
    params.update({k: v for k, v in scaling.items() if k not in params})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    return theta, params


def parse_arch(cfg: dict[str, Any], source: str) -> ArchConfig:
    """ArchConfig from a config.json dict; ValueError naming `source` when it is not a model we can run."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{source}: unsupported architecture {model_type!r} "
                         f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        theta, rope = _rope_settings(cfg)
        qkv_bias = SUPPORTED_MODEL_TYPES[model_type] or bool(cfg.get("attention_bias", False))
        window = cfg.get("sliding_window") if cfg.get("use_sliding_window", model_type == "mistral") else None
        arch = ArchConfig(
            model_type=model_type,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=model_type == "llama" and bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            rope_theta=theta,
            rope=rope,
            sliding_window=int(window) if window else None,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source}: config is missing or has a bad value for {exc}") from None
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: unsupported activation {cfg.get('hidden_act')!r} (only silu)")
    if arch.rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"{source}: unsupported rope scaling {arch.rope_type!r} "
                         f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    if arch.num_heads % arch.num_kv_heads:
        raise ValueError(f"{source}: num_attention_heads {arch.num_heads} is not a multiple of "
                         f"num_key_value_heads {arch.num_kv_heads}")
    return arch
