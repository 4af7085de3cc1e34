"""What the latency model charges for an iteration's shape (sliceserve.core.latency): the attention pairs of a
prompt chunk, the effective prefix of several chunks, and the context length a padded decode step attends."""
from __future__ import annotations

from typing import Iterable


def attention_pairs(n: int, prefix: float = 0.0) -> float:
    """(query, key) pairs a causal chunk of `n` tokens after `prefix` cached ones scores: each of its queries
    sees the prefix and the chunk's tokens up to itself."""
    return n * prefix + n * (n + 1) / 2


def prefill_shape(chunks: Iterable[tuple[int, int]]) -> tuple[int, float]:
    """(tokens, effective prefix) of an iteration's prompt chunks, given as (tokens, cached before): the prefix
    P with attention_pairs(tokens, P) equal to the chunks' own pairs summed, so that one p(n, P) prices several
    chunks' attention exactly (P can be negative: two fresh chunks score fewer pairs than one of their sum)."""
    chunks = [(n, p) for n, p in chunks if n > 0]
    total = sum(n for n, _ in chunks)
    return total, effective_prefix(total, sum(attention_pairs(n, p) for n, p in chunks))


def effective_prefix(tokens: int, pairs: float) -> float:
    """The prefix P with attention_pairs(tokens, P) == pairs (0 for no tokens): prices prompt pieces whose
    attention pairs were summed as they came (SLICE's selection adds candidates' prompts one at a time)."""
    return (pairs - tokens * (tokens + 1) / 2) / tokens if tokens > 0 else 0.0


def attended_length(ctx: float, buckets: list[int] | None, ctx_max: float | None = None) -> float:
    """The context length the per-iteration term charges for a decode step at mean context `ctx`: `ctx`
    itself, or, when the runner pads to `buckets`, the smallest bucket holding the ctx_max + 1 positions the
    step's longest sequence attends over (the runner pads the whole step to it; `ctx` when the longest is
    unknown; past the largest bucket the step runs unpadded)."""
    if buckets:
        longest = ctx if ctx_max is None else ctx_max
        for b in buckets:
            if b >= longest + 1.0:
                return float(b)
    return ctx
