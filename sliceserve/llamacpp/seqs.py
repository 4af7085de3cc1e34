"""Which llama.cpp sequence id each running request holds, and how many of its tokens that sequence holds.

llama.cpp keys its KV memory by small integer sequence ids (0 .. n_seq_max - 1); the scheduler keys requests
by string ids. A request takes a free id on its first computed token and gives it back when it finishes or is
preempted, so at most max_num_seqs ids are ever in use.
"""
from __future__ import annotations


class SeqSlots:
    def __init__(self, n_seq_max: int) -> None:
        self._free = list(range(n_seq_max - 1, -1, -1))   # pop() hands out 0 first
        self._seq: dict[str, int] = {}
        self.length: dict[str, int] = {}   # req_id -> tokens in llama.cpp's memory (next position to feed)

    def __contains__(self, req_id: str) -> bool:
        return req_id in self._seq

    def __len__(self) -> int:
        return len(self._seq)

    def seq_id(self, req_id: str) -> int:
        return self._seq[req_id]

    def acquire(self, req_id: str) -> int | None:
        """The request's sequence id, taking a free one if it has none; None when all are in use."""
        if req_id in self._seq:
            return self._seq[req_id]
        if not self._free:
            return None
        self._seq[req_id] = seq = self._free.pop()
        self.length[req_id] = 0
        return seq

    def release(self, req_id: str) -> int | None:
        """Give the id back; returns it (its memory must be cleared by the caller) or None if none was held."""
        self.length.pop(req_id, None)
        seq = self._seq.pop(req_id, None)
        if seq is not None:
            self._free.append(seq)
        return seq
