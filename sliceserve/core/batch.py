"""What a policy's `plan(now)` returns: which requests compute how many tokens in one iteration."""
from __future__ import annotations

from dataclasses import dataclass, field

from sliceserve.request import Request


@dataclass(slots=True)
class Batch:
    """What a policy's `plan` returns: prompt/recompute chunks and decodes for one iteration."""

    prefill: dict[str, int] = field(default_factory=dict)
    decode: list[str] = field(default_factory=list)
    num_tokens: int = 0

    def add_prefill(self, req: Request, n: int) -> None:
        self.prefill[req.req_id] = n
        self.num_tokens += n

    def add_decode(self, req: Request) -> None:
        self.decode.append(req.req_id)
        self.num_tokens += 1

    @property
    def num_seqs(self) -> int:
        return len(self.prefill) + len(self.decode)
