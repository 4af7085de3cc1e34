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


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """layer(x) computed as (W @ x^T)^T for plain Linear layers: on this VM's MKL (1 thread, fp32) that
    orientation measured up to 2x faster at batch 4 and 5-15% at 16-32 than x @ W^T for these shapes.
    Other modules (e.g. dynamically quantised Linear) run as they are."""
    if type(layer) is not nn.Linear:
        return layer(x)
    y = (layer.weight @ x.t()).t()
    return y + layer.bias if layer.bias is not None else y


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # One fused kernel instead of six ops (7% of an int8 decode step at batch 1 here), the same
            # arithmetic as the lines below for fp32 (the equivalence tests hold it to transformers').
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
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
        self.qkv_proj: nn.Linear | None = None   # set by fuse(): q, k, v rows stacked in one matrix
        self.scale = hd ** -0.5

    def fuse(self) -> None:
        """One [q; k; v] projection instead of three: one matmul per layer reads the input once."""
        self.qkv_proj = _stack_linears([self.q_proj, self.k_proj, self.v_proj])
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor],
                meta: AttentionMetadata) -> torch.Tensor:
        t, h, hk, hd = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        if self.qkv_proj is not None:
            qkv = linear(x, self.qkv_proj)
            # q and k rotate together: one rotary pass over h + hk heads instead of two.
            qk = apply_rotary(qkv[:, :(h + hk) * hd].reshape(t, h + hk, hd), cos, sin)
            q, k = qk[:, :h], qk[:, h:]
            v = qkv[:, (h + hk) * hd:].reshape(t, hk, hd)
        else:
            q = apply_rotary(linear(x, self.q_proj).reshape(t, h, hd), cos, sin)
            k = apply_rotary(linear(x, self.k_proj).reshape(t, hk, hd), cos, sin)
            v = linear(x, self.v_proj).reshape(t, hk, hd)
        write_kv(cache[0], cache[1], k, v, meta.slot_mapping)
        o = paged_attention(q, cache[0], cache[1], meta, self.scale)
        return linear(o.reshape(t, h * hd), self.o_proj)


class MLP(nn.Module):
    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        d, i, bias = arch.hidden_size, arch.intermediate_size, arch.mlp_bias
        self.gate_proj = nn.Linear(d, i, bias=bias)
        self.up_proj = nn.Linear(d, i, bias=bias)
        self.down_proj = nn.Linear(i, d, bias=bias)
        self.gate_up_proj: nn.Linear | None = None   # set by fuse()

    def fuse(self) -> None:
        self.gate_up_proj = _stack_linears([self.gate_proj, self.up_proj])
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = linear(x, self.gate_up_proj).chunk(2, dim=-1)
            return linear(F.silu(gate) * up, self.down_proj)
        return linear(F.silu(linear(x, self.gate_proj)) * linear(x, self.up_proj), self.down_proj)


def _stack_linears(parts: list[nn.Linear]) -> nn.Linear:
    """A Linear whose output is the concatenation of `parts`' outputs (weights copied once, at load)."""
    weight = torch.cat([p.weight.detach() for p in parts])
    has_bias = parts[0].bias is not None
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if has_bias:
        fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
    return fused


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

    def fuse_projections(self) -> "LlamaForCausalLM":
        """Stack q/k/v and gate/up weights (after loading the checkpoint's separate ones): fewer, larger
        matmuls per layer. Parameter names change (qkv_proj, gate_up_proj), so load weights first."""
        for layer in self.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            # Only plain fp Linear layers stack; a quantised form (a memory target's choice) stays as it is.
            if attn.qkv_proj is None and all(type(m) is nn.Linear for m in (attn.q_proj, attn.k_proj, attn.v_proj)):
                attn.fuse()
            if mlp.gate_up_proj is None and all(type(m) is nn.Linear for m in (mlp.gate_proj, mlp.up_proj)):
                mlp.fuse()
        return self

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                meta: AttentionMetadata, logit_rows: torch.Tensor, hidden_rows: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """input_ids, positions: [T]; returns fp32 logits [len(logit_rows), vocab]. With `hidden_rows`, also
        those rows' final (normed) hidden states, fp32 [len(hidden_rows), hidden]: embeddings pool them."""
        if self.rotary is None:
            self.rotary = Rotary(self.arch, input_ids.device)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        for layer, cache in zip(self.model.layers, kv_caches):
            x = layer(x, cos, sin, cache, meta)
        logits = linear(self.model.norm(x.index_select(0, logit_rows)), self.lm_head).float()
        if hidden_rows is None:
            return logits
        return logits, self.model.norm(x.index_select(0, hidden_rows)).float()
