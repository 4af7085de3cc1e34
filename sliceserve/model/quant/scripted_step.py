"""The int8 lone-sequence decode step's layers and head, run by TorchScript instead of Python.

Why: calling `quantized::linear_dynamic` from Python costs ~13 us of fixed overhead per call on this CPU,
most of it not in the kernel: converting the packed weight (a TorchScript object) into the call's argument
throws and catches a C++ exception every time (perf: ~30 % of such a call in libgcc_s / libstdc++ unwinding).
From TorchScript, where the packed weight is already an IValue, the same call costs ~1.7 us. A batch-1 step
of the embedded model makes 117 such calls, so this was ~1.4 ms of a ~16 ms step, and the interpreter also
runs the other ~25 small operators per layer with less overhead than Python. TorchScript is deprecated in
torch 2.13 but works, as do the quantised kernels this representation already rests on; the seam
(representation.py) keeps both replaceable, and `build` returns None (the Python pass runs) whenever this
form cannot be scripted.

Every operator is the one sliceserve.model.single_decode's Python pass calls, in the same order, so the
results are bit-identical (tests/model/test_single_decode.py); the interpreter fuses nothing on CPU.
"""
from __future__ import annotations

import logging
import warnings
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class _Layer(nn.Module):
    """One decoder layer's decode step for 1..FUSED_MAX_ROWS sequences. Projections are fbgemm-packed int8
    weights called as Int8DynamicLinear's fused path calls them (`_FusedCall`), but a down projection the
    representation keeps in fp32 (`down_fp32`) multiplies as the general pass's `linear` does."""

    def __init__(self, dims: List[int], eps: float, norm_in: torch.Tensor, norm_post: torch.Tensor, qkv, o,
                 gate_up, down, down_weight: Optional[torch.Tensor], flat_k: torch.Tensor,
                 flat_v: torch.Tensor) -> None:
        super().__init__()
        from sliceserve.model.quant.int8_linear import _FusedCall

        self.heads, self.kv_heads, self.head_dim, self.inter, self.hidden = dims
        self.eps = eps
        self.norm_in, self.norm_post = norm_in, norm_post
        self.qkv, self.o, self.gate_up = _FusedCall(qkv), _FusedCall(o), _FusedCall(gate_up)
        self.down = _FusedCall(down if down is not None else qkv)       # unused when down_fp32
        self.down_fp32 = down_weight is not None
        self.down_weight = down_weight if down_weight is not None else torch.empty(0)
        self.flat_k, self.flat_v = flat_k, flat_v

    def _attend(self, q: torch.Tensor, context: torch.Tensor, offset: int, length: int, rows: List[torch.Tensor],
                slots: List[torch.Tensor], masks: List[Optional[torch.Tensor]]) -> torch.Tensor:
        """q [B, heads, head_dim] -> [B, heads * head_dim]: one sequence over `context` (consecutive slots
        from `offset` when offset >= 0, else gathered), or groups of sequences as paged_attention runs them."""
        h, hk, hd = self.heads, self.kv_heads, self.head_dim
        if len(rows) == 0:
            if offset >= 0:
                shape, stride = [1, hk, length, hd], [length * hk * hd, hd, hk * hd, 1]
                keys = self.flat_k.as_strided(shape, stride, offset)
                values = self.flat_v.as_strided(shape, stride, offset)
            else:
                keys = self.flat_k.index_select(0, context).view(1, length, hk, hd).transpose(1, 2)
                values = self.flat_v.index_select(0, context).view(1, length, hk, hd).transpose(1, 2)
            o = F.scaled_dot_product_attention(q.view(1, hk, h // hk, hd), keys, values, scale=hd ** -0.5)
            return o.view(1, h * hd)
        out = torch.empty(q.shape[0], h, hd, dtype=q.dtype)
        for i in range(len(rows)):
            b, n = slots[i].shape[0], slots[i].shape[1]
            qd = q.index_select(0, rows[i]).view(b, hk, h // hk, hd)
            kd = self.flat_k.index_select(0, slots[i].reshape(-1)).view(b, n, hk, hd)
            vd = self.flat_v.index_select(0, slots[i].reshape(-1)).view(b, n, hk, hd)
            o = F.scaled_dot_product_attention(qd, kd.transpose(1, 2), vd.transpose(1, 2), attn_mask=masks[i],
                                               scale=hd ** -0.5)
            out.index_copy_(0, rows[i], o.reshape(b, h, hd))
        return out.reshape(q.shape[0], h * hd)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot: torch.Tensor,
                context: torch.Tensor, offset: int, length: int, rows: List[torch.Tensor],
                slots: List[torch.Tensor], masks: List[Optional[torch.Tensor]]) -> torch.Tensor:
        h, hk, hd = self.heads, self.kv_heads, self.head_dim
        t, n_qk = x.shape[0], (h + hk) * hd
        qkv = self.qkv(F.rms_norm(x, [self.hidden], self.norm_in, self.eps))
        qk = qkv[:, :n_qk].view(t, h + hk, hd)
        qk = (qk * cos).add_(qk.roll(hd // 2, -1).mul_(sin))
        self.flat_k.index_copy_(0, slot, qk[:, h:])
        self.flat_v.index_copy_(0, slot, qkv[:, n_qk:].view(t, hk, hd))
        x = x + self.o(self._attend(qk[:, :h], context, offset, length, rows, slots, masks))
        gate_up = self.gate_up(F.rms_norm(x, [self.hidden], self.norm_post, self.eps))
        act = F.silu(gate_up[:, :self.inter]).mul_(gate_up[:, self.inter:])
        if self.down_fp32:
            return x + (self.down_weight @ act.t()).t()
        return x + self.down(act)


class _Step(nn.Module):
    def __init__(self, layers: List[_Layer], norm: torch.Tensor, eps: float, head) -> None:
        super().__init__()
        from sliceserve.model.quant.int8_linear import _FusedCall

        self.layers = nn.ModuleList(layers)
        self.norm, self.eps, self.head = norm, eps, _FusedCall(head)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot: torch.Tensor,
                context: torch.Tensor, offset: int, length: int, rows: List[torch.Tensor],
                slots: List[torch.Tensor], masks: List[Optional[torch.Tensor]]) -> torch.Tensor:
        """fp32 logits [B, vocab]. One sequence: `context`/`offset`/`length` as SingleDecode.run describes and
        empty group lists; several: one attention call per group (rows, slots [b, L], mask or None)."""
        for layer in self.layers:
            x = layer(x, cos, sin, slot, context, offset, length, rows, slots, masks)
        x = F.rms_norm(x, [x.shape[1]], self.norm, self.eps)
        return self.head(x)


def _packed(module: nn.Module):
    """fbgemm's packed weight of an int8 projection the fused single-row kernel runs; None otherwise."""
    from sliceserve.model.quant.int8_linear import Int8DynamicLinear

    if isinstance(module, Int8DynamicLinear) and module._packed is not None and module.bias is None:
        return module._packed
    return None


def build(model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.jit.ScriptModule | None:
    """The scripted step of an int8 model whose projections all take the fused kernel (but fp32 down
    projections), norms in fp32; None for any other model, or if TorchScript fails here."""
    arch = model.arch
    layers = []
    for layer, (k, v) in zip(model.model.layers, kv_caches):
        attn, mlp = layer.self_attn, layer.mlp
        packs = [_packed(m) for m in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj)]
        down = _packed(mlp.down_proj)
        down_weight = mlp.down_proj.weight if type(mlp.down_proj) is nn.Linear and mlp.down_proj.bias is None else None
        norms = (layer.input_layernorm.weight, layer.post_attention_layernorm.weight)
        if any(p is None for p in packs) or (down is None and down_weight is None) or \
                any(w.dtype != torch.float32 for w in norms):
            return None
        layers.append(_Layer([arch.num_heads, arch.num_kv_heads, arch.head_dim, arch.intermediate_size,
                              arch.hidden_size], layer.input_layernorm.eps, *norms, *packs, down, down_weight,
                             k.view(-1, *k.shape[2:]), v.view(-1, *v.shape[2:])))
    head = _packed(model.lm_head)
    if head is None or model.model.norm.weight.dtype != torch.float32:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch.jit.script is deprecated in 2.13; it still works
            return torch.jit.script(_Step(layers, model.model.norm.weight, model.model.norm.eps, head))
    except Exception as exc:  # noqa: BLE001 - any TorchScript failure leaves the Python pass
        log.warning("int8 decode step not scripted (%s: %s); the Python pass runs", type(exc).__name__, exc)
        return None
