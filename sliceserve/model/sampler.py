"""Token sampling: greedy, temperature, top-k, top-p (nucleus, Holtzman et al., ICLR'20), per-request seed.

Randomness for a request's i-th output token comes from a generator seeded by (seed, i). A request
therefore draws the same tokens alone or batched, and after a recompute preemption, with no generator
state to carry; unseeded requests get a seed from the runner's own seeded RNG.
"""
from __future__ import annotations

import torch

from sliceserve.request import SamplingParams

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio) spreading nearby (seed, index) pairs apart


def token_seed(seed: int, index: int) -> int:
    return (seed * _MIX + index * 0xBF58476D1CE4E5B9 + 1) % (2 ** 63)


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits (1-D, fp32) with everything outside top-k / top-p set to -inf."""
    logits = logits / params.temperature
    vocab = logits.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens strictly more likely already cover top_p; the first always stays.
        drop = (probs.cumsum(-1) - probs) >= params.top_p
        drop[0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, seed: int, index: int) -> int:
    """One token from 1-D fp32 `logits` for a request's `index`-th output token."""
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    probs = filter_logits(logits, params).softmax(-1)
    gen = torch.Generator(device=probs.device)
    gen.manual_seed(token_seed(seed, index))
    return int(torch.multinomial(probs, 1, generator=gen))
