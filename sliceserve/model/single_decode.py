"""One decode step of one sequence, in as few operator calls as the model allows (CPU); on int8, decode-only
steps of up to 16 sequences as well (`run_many`, through the scripted step of quant/scripted_step.py).

Why: at batch 1 on the embedded SmolLM2-135M (30 layers, hidden 576) the int8 matmuls took ~8.6 ms of a
~17 ms forward pass; the other half was ~40 small operator calls per layer, each costing microseconds of
dispatch and Python (module calls, dataclass metadata, views, rotary's cat/neg, a general attention path
that loops over prefills and decode groups). A lone decoding sequence needs none of that generality: its
context is one sequence's slots, its new token one row. This path computes exactly what
`LlamaForCausalLM.forward` computes for that case with ~20 calls per layer:
  - the per-layer weights, norms and flat cache views are looked up once, not per step;
  - an int8 projection calls fbgemm's fused dynamic kernel directly (Int8DynamicLinear's single-row path);
  - rotary as x * cos + roll(x, half) * sin', with sin' = [-sin, sin] over the two halves: the same
    products as rotate-half's cat(-x2, x1) * sin (negating a factor is exact) without the slices and neg;
  - a context in consecutive blocks is read as a strided view of the cache (no gather; scattered blocks are
    gathered as the general pass gathers them), the K/V write is one index_copy_ each.
The general path stays the reference; tests/model/test_single_decode.py holds the two to the same logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sliceserve.model.llama import LlamaForCausalLM, linear

Project = Callable[[torch.Tensor], torch.Tensor]


def projector(module: nn.Module) -> Project:
    """x [1, in] -> module(x), through the cheapest call that computes the same thing."""
    from sliceserve.model.quant.int8_linear import Int8DynamicLinear

    if isinstance(module, Int8DynamicLinear) and module._packed is not None and module.bias is None:
        packed, op = module._packed, torch.ops.quantized.linear_dynamic
        return lambda x: op(x, packed, True)
    return lambda x: linear(x, module)


def normer(norm: nn.Module) -> Project:
    """RMSNorm as one fused call where the module itself would take it (fp32 input and weight)."""
    weight, eps = norm.weight, norm.eps
    if weight.dtype != torch.float32:
        return norm
    shape = (weight.shape[0],)
    return lambda x: F.rms_norm(x, shape, weight, eps)


@dataclass
class _Layer:
    norm_in: Project
    qkv: Project
    o: Project
    norm_post: Project
    gate_up: Project
    down: Project
    flat_k: torch.Tensor   # the layer's cache as [slots, kv heads, head dim]
    flat_v: torch.Tensor


class SingleDecode:
    """Decode-only steps over a runner's model and cache: one sequence (`run`), or on int8 up to
    FUSED_MAX_ROWS (`run_many`, when `takes(n)`). `supported(model)` says whether the model's layers have the
    fused projections this path needs."""

    def __init__(self, model: LlamaForCausalLM, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        arch = model.arch
        self.model = model
        self.heads, self.kv_heads, self.head_dim = arch.num_heads, arch.num_kv_heads, arch.head_dim
        self.inter = arch.intermediate_size
        self.layers = [self._layer(layer, k, v) for layer, (k, v) in zip(model.model.layers, kv_caches)]
        self.final_norm = normer(model.model.norm)
        self.head = projector(model.lm_head)
        # An int8 model's layers and head run in TorchScript where they can (quant/scripted_step.py): the
        # same operators without Python's per-call costs; None: this Python pass runs them.
        from sliceserve.model.quant.scripted_step import build

        self.scripted = build(model, kv_caches)
        self._no_context = torch.empty(0, dtype=torch.long)

    @staticmethod
    def supported(model: nn.Module) -> bool:
        return isinstance(model, LlamaForCausalLM) and all(
            layer.self_attn.qkv_proj is not None and layer.mlp.gate_up_proj is not None for layer in model.model.layers)

    def _layer(self, layer: nn.Module, cache_k: torch.Tensor, cache_v: torch.Tensor) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        return _Layer(normer(layer.input_layernorm), projector(attn.qkv_proj), projector(attn.o_proj),
                      normer(layer.post_attention_layernorm), projector(mlp.gate_up_proj), projector(mlp.down_proj),
                      cache_k.view(-1, *cache_k.shape[2:]), cache_v.view(-1, *cache_v.shape[2:]))

    def _rotary(self, position: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and the half-signed sin, [1, head_dim] each, for one position."""
        model = self.model
        if model.rotary is None:
            from sliceserve.model.rope import Rotary

            model.rotary = Rotary(model.arch, torch.device("cpu"))
        cos, sin = model.rotary.cos_sin(torch.tensor([position]), dtype)
        half = self.head_dim // 2
        signed = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        return cos[0], signed

    def run(self, token: int, position: int, context: int | torch.Tensor) -> torch.Tensor:
        """fp32 logits [1, vocab] of the token at `position`. `context`: where positions 0..position sit in the
        cache, either the first of that many consecutive slots (read as views) or their slots [position + 1]
        (gathered, as the general pass does for blocks that are not consecutive). The token's K/V is written
        to the last of them."""
        h, hk, hd = self.heads, self.kv_heads, self.head_dim
        half, n_qk, length = hd // 2, (h + hk) * hd, position + 1
        x = self.model.model.embed_tokens(torch.tensor([token]))
        cos, sin = self._rotary(position, x.dtype)
        contiguous = isinstance(context, int)
        slot = torch.tensor([context + position]) if contiguous else context[position:]
        # A contiguous context as [1, kv heads, length, head dim] views of a [slots, hk, hd] cache.
        shape, stride = (1, hk, length, hd), (length * hk * hd, hd, hk * hd, 1)
        offset = context * hk * hd if contiguous else 0
        if self.scripted is not None:
            return self.scripted(x, cos, sin, slot, self._no_context if contiguous else context,
                                 offset if contiguous else -1, length, [], [], [])
        for lay in self.layers:
            qkv = lay.qkv(lay.norm_in(x))
            qk = qkv[:, :n_qk].view(h + hk, hd)
            qk = (qk * cos).add_(qk.roll(half, -1).mul_(sin))   # not addcmul: its fused multiply-add rounds differently
            lay.flat_k.index_copy_(0, slot, qk[h:].unsqueeze(0))
            lay.flat_v.index_copy_(0, slot, qkv[:, n_qk:].view(1, hk, hd))
            if contiguous:
                keys = lay.flat_k.as_strided(shape, stride, offset)
                values = lay.flat_v.as_strided(shape, stride, offset)
            else:
                keys = lay.flat_k.index_select(0, context).view(1, length, hk, hd).transpose(1, 2)
                values = lay.flat_v.index_select(0, context).view(1, length, hk, hd).transpose(1, 2)
            o = F.scaled_dot_product_attention(qk[:h].view(1, hk, h // hk, hd), keys, values,
                                               scale=hd ** -0.5)
            x = x + lay.o(o.view(1, h * hd))
            gate_up = lay.gate_up(lay.norm_post(x))
            act = F.silu(gate_up[:, :self.inter]).mul_(gate_up[:, self.inter:])
            x = x + lay.down(act)
        return self.head(self.final_norm(x)).float()

    def takes(self, rows: int) -> bool:
        """Whether a decode-only step of `rows` sequences runs here."""
        from sliceserve.model.quant.int8_linear import FUSED_MAX_ROWS

        return rows == 1 or (self.scripted is not None and rows <= FUSED_MAX_ROWS)

    def run_many(self, tokens: list[int], positions: list[int], groups: list, write_slots: torch.Tensor
                 ) -> torch.Tensor | None:
        """fp32 logits [B, vocab] of a decode-only step of B sequences (rows in `tokens` order; `groups`: the
        runner's attention groups, `write_slots` each row's new K/V slot) through the scripted int8 step; None
        where it does not apply (no scripted step, or more rows than the fused kernel takes)."""
        if len(tokens) < 2 or not self.takes(len(tokens)):
            return None
        x = self.model.model.embed_tokens(torch.tensor(tokens))
        cos, sin = self.model.rotary.cos_sin(torch.tensor(positions), x.dtype) if self.model.rotary is not None \
            else self._rotary_table(positions, x.dtype)
        half = self.head_dim // 2
        signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return self.scripted(x, cos, signed, write_slots, self._no_context, -1, 0, [g.rows for g in groups],
                             [g.slots for g in groups], [g.mask for g in groups])

    def _rotary_table(self, positions: list[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        self._rotary(0, dtype)   # creates the model's rotary tables
        return self.model.rotary.cos_sin(torch.tensor(positions), dtype)
