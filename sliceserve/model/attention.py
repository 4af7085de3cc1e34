"""Attention over the paged KV cache for one mixed batch.

Each layer's cache is a pair of preallocated tensors [num_blocks, block_size, n_kv_heads, head_dim]. A
sequence's keys are gathered from its blocks through a slot index (block * block_size + offset), so the
cache never grows or concatenates (transformers' DynamicCache concatenation was 59% of a step here,
DESIGN.md). Grouped-query attention needs no key expansion: the `group` query heads sharing one KV head
are folded into the query-length axis, so SDPA sees [n_kv_heads, group * n, head_dim] queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefillSeq:
    start: int                 # first row of this sequence in the flattened batch
    num_new: int               # tokens fed this iteration
    slots: torch.Tensor        # [ctx] cache slots of every token of the context (prefix + new)
    mask: torch.Tensor | None  # [group * num_new, ctx] bool, True = may attend; None when num_new == 1


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor       # [T] where each new token's K/V is written
    prefills: list[PrefillSeq]       # sequences with a chunk (rows [start, start + num_new))
    decode_rows: torch.Tensor        # [B] rows of single-token sequences, batched together
    decode_slots: torch.Tensor       # [B, L] cache slots, padded to the longest context
    decode_mask: torch.Tensor | None # [B, 1, 1, L] bool, False on padding; None when there is none


def write_kv(cache_k: torch.Tensor, cache_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    flat_k = cache_k.view(-1, *cache_k.shape[2:])
    flat_v = cache_v.view(-1, *cache_v.shape[2:])
    flat_k.index_copy_(0, slot_mapping, k)
    flat_v.index_copy_(0, slot_mapping, v)


def paged_attention(q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, meta: AttentionMetadata,
                    scale: float) -> torch.Tensor:
    """q: [T, H, D] for the batch's new tokens (their K/V already written); returns [T, H, D]."""
    num_kv = cache_k.shape[2]
    head_dim = q.shape[-1]
    group = q.shape[1] // num_kv
    flat_k = cache_k.view(-1, num_kv, head_dim)
    flat_v = cache_v.view(-1, num_kv, head_dim)
    out = torch.empty_like(q)
    for seq in meta.prefills:
        n = seq.num_new
        # [n, Hkv*group, D] -> [Hkv, group*n, D] (head h = kv * group + g, the layout repeat_kv assumes)
        qs = q[seq.start:seq.start + n].view(n, num_kv, group, head_dim).permute(1, 2, 0, 3)
        qs = qs.reshape(num_kv, group * n, head_dim)
        ks = flat_k.index_select(0, seq.slots).transpose(0, 1)
        vs = flat_v.index_select(0, seq.slots).transpose(0, 1)
        o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=seq.mask, scale=scale)
        out[seq.start:seq.start + n] = o.view(num_kv, group, n, head_dim).permute(2, 0, 1, 3).reshape(
            n, num_kv * group, head_dim)
    if meta.decode_rows.numel():
        b, length = meta.decode_slots.shape
        qd = q.index_select(0, meta.decode_rows).view(b, num_kv, group, head_dim)
        kd = flat_k.index_select(0, meta.decode_slots.reshape(-1)).view(b, length, num_kv, head_dim)
        vd = flat_v.index_select(0, meta.decode_slots.reshape(-1)).view(b, length, num_kv, head_dim)
        o = F.scaled_dot_product_attention(qd, kd.transpose(1, 2), vd.transpose(1, 2),
                                           attn_mask=meta.decode_mask, scale=scale)
        out.index_copy_(0, meta.decode_rows, o.reshape(b, num_kv * group, head_dim))
    return out
