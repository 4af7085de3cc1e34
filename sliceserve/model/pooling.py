"""Embeddings from the served decoder: the final (normed) hidden states of a prompt, pooled into one vector.

A prompt may be prefilled in several chunks (the scheduler's `max_num_batched_tokens`), so the pooler keeps a
running sum (and the last row) per request across iterations and answers once the prompt is complete.

Pooling, chosen by measurement (docs/results/embeddings.md, tests/model/test_embedding_quality.py): `mean`
over every prompt position, L2-normalised. `last` (the last position's state, as decoder embedders trained
for it use) is kept for comparison; on SmolLM2-135M-Instruct it separated paraphrases from unrelated pairs
less well (figures in the results page).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

POOLINGS = ("mean", "last")


@dataclass(slots=True)
class _Partial:
    total: torch.Tensor     # sum of the rows seen so far, fp32 [hidden]
    count: int
    last: torch.Tensor      # the latest row


class PromptPooler:
    def __init__(self, pooling: str = "mean") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
        self.pooling = pooling
        self._partial: dict[str, _Partial] = {}

    def forget(self, req_id: str) -> None:
        self._partial.pop(req_id, None)

    def add(self, req_id: str, first_pos: int, rows: torch.Tensor, completes: bool) -> list[float] | None:
        """Feed a chunk's hidden states (`rows` [n, hidden], prompt positions from `first_pos`); returns the
        pooled, L2-normalised vector when the chunk completes the prompt, else None."""
        part = self._partial.get(req_id)
        if part is None or first_pos == 0:   # new, or recomputed from the start after a preemption
            part = self._partial[req_id] = _Partial(torch.zeros(rows.shape[-1], dtype=torch.float32,
                                                                device=rows.device), 0, rows[-1])
        part.total += rows.sum(0)
        part.count += rows.shape[0]
        part.last = rows[-1]
        if not completes:
            return None
        del self._partial[req_id]
        vec = part.total / part.count if self.pooling == "mean" else part.last
        return torch.nn.functional.normalize(vec, dim=0).tolist()
