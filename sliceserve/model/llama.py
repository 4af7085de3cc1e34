"""A Llama-family decoder (Llama, SmolLM2, Mistral, Qwen2) in plain PyTorch over a paged KV cache.

Parameter names follow Hugging Face checkpoints (`model.layers.0.self_attn.q_proj.weight`, ...) so a
safetensors state dict loads without renaming. One forward pass takes the flattened new tokens of every
scheduled sequence (prompt chunks and single decode tokens alike) and returns logits only for the rows
that sample, which skips the vocabulary projection for the rest of a prompt chunk.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sliceserve.model.arch import ArchConfig
from sliceserve.model.attention import AttentionMetadata, paged_attention, write_kv
from sliceserve.model.rope import Rotary, apply_rotary


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and cast back before the weight, as the reference implementation does.
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class Attention(nn.Module):
    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        d, hd = arch.hidden_size, arch.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = arch.num_heads, arch.num_kv_heads, hd
        self.q_proj = nn.Linear(d, arch.num_heads * hd, bias=arch.qkv_bias)
        self.k_proj = nn.Linear(d, arch.num_kv_heads * hd, bias=arch.qkv_bias)
        self.v_proj = nn.Linear(d, arch.num_kv_heads * hd, bias=arch.qkv_bias)
        self.o_proj = nn.Linear(arch.num_heads * hd, d, bias=arch.o_bias)
        self.scale = hd ** -0.5

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor],
                meta: AttentionMetadata) -> torch.Tensor:
        t = x.shape[0]
        q = apply_rotary(self.q_proj(x).view(t, self.num_heads, self.head_dim), cos, sin)
        k = apply_rotary(self.k_proj(x).view(t, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).view(t, self.num_kv_heads, self.head_dim)
        write_kv(cache[0], cache[1], k, v, meta.slot_mapping)
        o = paged_attention(q, cache[0], cache[1], meta, self.scale)
        return self.o_proj(o.reshape(t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        d, i, bias = arch.hidden_size, arch.intermediate_size, arch.mlp_bias
        self.gate_proj = nn.Linear(d, i, bias=bias)
        self.up_proj = nn.Linear(d, i, bias=bias)
        self.down_proj = nn.Linear(i, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.self_attn = Attention(arch)
        self.mlp = MLP(arch)
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)

    def forward(self, x, cos, sin, cache, meta):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class _Backbone(nn.Module):
    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(arch) for _ in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch
        self.model = _Backbone(arch)
        self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)
        if arch.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary: Rotary | None = None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                meta: AttentionMetadata, logit_rows: torch.Tensor) -> torch.Tensor:
        """input_ids, positions: [T]; returns fp32 logits [len(logit_rows), vocab]."""
        if self.rotary is None:
            self.rotary = Rotary(self.arch, input_ids.device)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        for layer, cache in zip(self.model.layers, kv_caches):
            x = layer(x, cos, sin, cache, meta)
        x = self.model.norm(x.index_select(0, logit_rows))
        return self.lm_head(x).float()
