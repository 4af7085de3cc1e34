"""How much a representation changes the model: perplexity on a text and greedy agreement with another one.

Used by tests/model/test_quality.py (int8 within 3 % of fp32's perplexity) and benchmarks/cpu_quality.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sliceserve.model.attention import AttentionMetadata, PrefillSeq

def read_prose(path: Path) -> str:
    """The text without its '#' header lines."""
    return "\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("#")).strip()


def window_logits(loaded, ids: list[int]) -> torch.Tensor:
    """fp32 logits of every position of `ids`, one causal prefill into the runner's cache (slots 0..n-1)."""
    n = len(ids)
    slots = torch.arange(n)
    meta = AttentionMetadata(slot_mapping=slots, prefills=[PrefillSeq(0, n, slots, None, causal=True)],
                             decode_groups=[])
    with torch.inference_mode():
        return loaded.runner.model(torch.tensor(ids), torch.arange(n), loaded.runner.kv_caches, meta,
                                   torch.arange(n))


def perplexity(loaded, ids: list[int], window: int = 512) -> float:
    """exp(mean next-token NLL) over `ids`, scored in independent windows of `window` tokens."""
    total, count = 0.0, 0
    for lo in range(0, len(ids) - 1, window):
        chunk = ids[lo:lo + window + 1]
        if len(chunk) < 2:
            break
        logits = window_logits(loaded, chunk[:-1])
        total += F.cross_entropy(logits, torch.tensor(chunk[1:]), reduction="sum").item()
        count += len(chunk) - 1
    return math.exp(total / count)


def greedy_agreement(a: list[list[int]], b: list[list[int]]) -> tuple[int, float]:
    """(sequences identical, mean share of each sequence's tokens before the first difference)."""
    same = sum(x == y for x, y in zip(a, b))
    shares = []
    for x, y in zip(a, b):
        k = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
        shares.append(k / max(len(x), len(y), 1))
    return same, sum(shares) / max(len(shares), 1)
