"""FastServe's skip-join MLFQ index: per-level entry-ordered queues of KV holders and waiting requests
(waiting ones also bucketed by the KV blocks they need), so no step of the policy is O(waiting)."""
from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass

from sliceserve.request import Request

# Priority as one int (level first, then entry order) so comparisons are on ints, not tuples.
LEVEL_SHIFT = 1 << 48
NO_ENTRY = 1 << 62   # "no entry": larger than every entry number
HOLDER = -1      # MLFQState.blocks of a request indexed as a KV holder


@dataclass(slots=True)
class MLFQState:
    req: Request
    level: int
    used_s: float        # execution time charged at the current level
    last_run_s: float    # when it last ran (or arrived, or was promoted)
    seq: int = 0         # entry number into the current level (unique over all levels)
    arrival_no: int = 0  # arrival order: the starvation guard promotes in this order
    blocks: int = HOLDER  # in the waiting index: KV blocks of its whole sequence; HOLDER otherwise

    @property
    def prio(self) -> int:
        """Level first, then entry order, as one int: lower runs first."""
        return self.level * LEVEL_SHIFT + self.seq


class Level:
    """One queue's entries in entry order: KV holders, and waiting requests (also bucketed by blocks)."""

    __slots__ = ("hold", "wait", "buckets", "sizes")

    def __init__(self) -> None:
        self.hold: list[int] = []                 # entry numbers, ascending
        self.wait: list[int] = []                 # entry numbers, ascending
        self.buckets: dict[int, list[int]] = {}   # blocks -> entry numbers, ascending
        self.sizes: list[int] = []                # keys of `buckets`, ascending

    def add(self, seq: int, blocks: int) -> None:
        if blocks == HOLDER:
            insert_seq(self.hold, seq)
            return
        insert_seq(self.wait, seq)
        bucket = self.buckets.get(blocks)
        if bucket is None:
            self.buckets[blocks] = [seq]
            insort(self.sizes, blocks)
        else:
            insert_seq(bucket, seq)

    def remove(self, seq: int, blocks: int) -> None:
        if blocks == HOLDER:
            delete_seq(self.hold, seq)
            return
        delete_seq(self.wait, seq)
        bucket = self.buckets[blocks]
        delete_seq(bucket, seq)
        if not bucket:
            del self.buckets[blocks]
            self.sizes.remove(blocks)

    def next_waiting(self, after: int, max_blocks: int | None) -> int:
        """First waiting entry after entry number `after` needing at most `max_blocks` blocks (None: any)."""
        if max_blocks is None:
            seqs = self.wait
            i = bisect_right(seqs, after)
            return seqs[i] if i < len(seqs) else NO_ENTRY
        best = NO_ENTRY
        for blocks in self.sizes:
            if blocks > max_blocks:
                break
            bucket = self.buckets[blocks]
            i = bisect_right(bucket, after)
            if i < len(bucket) and bucket[i] < best:
                best = bucket[i]
        return best


def insert_seq(seqs: list[int], seq: int) -> None:
    if not seqs or seqs[-1] < seq:
        seqs.append(seq)  # the usual case: a fresh entry number is the largest
    else:
        insort(seqs, seq)


def delete_seq(seqs: list[int], seq: int) -> None:
    i = bisect_right(seqs, seq) - 1
    assert i >= 0 and seqs[i] == seq, "fastserve queue index out of step"
    del seqs[i]


def arrival_no_of(st: MLFQState) -> int:
    return st.arrival_no
