"""SLICE's never-run candidates, kept ranked between rebuilds (issue 21: decision cost).

A waiting request that never ran (no token computed, none out, no e2e deadline, no rate boost) has a candidate
that does not change with time except for its TTFT feasibility (`SliceScheduler._waiting_candidate`), and a
sort key that does not change at all. Under overload a thousand of them wait, and a rebuild that visited each
one (build or look up, TTFT check, rank sort, context mean, top density) cost ~4 ms of the ~6 ms rebuild after
a burst of 1,000 arrivals. The pool keeps them in rank order with what the selection needs of all of them
(`Population`: count, context sum, feasible densities) updated as members come and go, and their TTFT
deadlines in a heap, so a rebuild touches only the members whose TTFT passed since the last one and the
members the walk reaches (`merged`).

The context sum is exact whatever the order: every candidate's context is a whole number of tokens plus half
its integer rate, so every partial sum is a multiple of 0.5 far below 2**53 and the float additions and
subtractions round nothing; the mean the selection uses is bit-identical to summing the list.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left
from operator import itemgetter
import math
from typing import Iterator

from sliceserve.core.slice.selection import Candidate, Population


class NewcomerPool:
    def __init__(self) -> None:
        self.keys: list[tuple] = []              # sort keys, ascending (rank order)
        self.cands: list[Candidate] = []         # same order
        self.members: dict[str, Candidate] = {}
        self._key: dict[str, tuple] = {}         # req_id -> its key as added
        self.ctx_sum = 0.0
        self._feasible: dict[float, int] = {}    # utility density -> feasible members of it
        self.infeasible: dict[str, Candidate] = {}   # members whose candidate is infeasible (`slice_drop_lost`)
        self._deadlines: list[tuple[float, int, str]] = []   # (TTFT deadline, seq, req_id) heap
        self._seq = 0

    def __len__(self) -> int:
        return len(self.cands)

    def __contains__(self, req_id: str) -> bool:
        return req_id in self.members

    def add(self, c: Candidate) -> None:
        req = c.req
        key = c.sort_key
        at = bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.cands.insert(at, c)
        self.members[req.req_id] = c
        self._key[req.req_id] = key
        self.ctx_sum += c.ctx
        if c.feasible:
            self._feasible[c.density] = self._feasible.get(c.density, 0) + 1
        else:
            self.infeasible[req.req_id] = c
        if req.slo.ttft_s is not None:
            self._seq += 1
            heapq.heappush(self._deadlines, (req.ttft_deadline_s, self._seq, req.req_id))

    def remove(self, req_id: str) -> Candidate | None:
        c = self.members.pop(req_id, None)
        if c is None:
            return None
        at = bisect_left(self.keys, self._key.pop(req_id))
        del self.keys[at], self.cands[at]
        self.ctx_sum -= c.ctx
        if c.feasible:
            self._drop_feasible(c.density)
        else:
            del self.infeasible[req_id]
        return c

    def replace(self, c: Candidate) -> None:
        """A member's candidate rebuilt (same request, so the same sort key)."""
        self.remove(c.req.req_id)
        self.add(c)

    def mark_infeasible(self, c: Candidate) -> None:
        if c.feasible:
            c.feasible = False
            self._drop_feasible(c.density)
            self.infeasible[c.req.req_id] = c

    def expire(self, now: float) -> list[Candidate]:
        """Members whose TTFT deadline is before `now` (none has a token: `ttft_lost`), each once while it
        stays a member; a request that leaves and comes back is pushed again (`add`)."""
        heap, out = self._deadlines, []
        while heap and heap[0][0] < now:
            _, _, rid = heapq.heappop(heap)
            c = self.members.get(rid)
            if c is not None:
                out.append(c)
        return out

    def top_density(self) -> float:
        return max(self._feasible, default=-math.inf)

    def population(self, fresh: list[Candidate]) -> Population:
        """The population of the pool and `fresh` (the candidates built this rebuild) together."""
        top = max(max((c.density for c in fresh if c.feasible), default=-math.inf), self.top_density())
        return Population(len(fresh) + len(self.cands), sum(c.ctx for c in fresh) + self.ctx_sum,
                          math.inf if top == -math.inf else top)

    def _drop_feasible(self, density: float) -> None:
        n = self._feasible[density] - 1
        if n:
            self._feasible[density] = n
        else:
            del self._feasible[density]

    def walk(self, fresh: list[Candidate]) -> tuple[Iterator[Candidate], Population]:
        """The selection's input: `fresh` (the candidates built this rebuild) and the members in one rank
        order (`merged`), and the population of both."""
        ranked = sorted([(c.sort_key, c) for c in fresh], key=itemgetter(0))
        cands = [c for _, c in ranked]
        return merged(cands, [k for k, _ in ranked], self), self.population(cands)

    def check(self) -> None:
        """Invariants (tests turn them on through `check_invariants`)."""
        assert self.keys == sorted(self.keys) and len(set(self.keys)) == len(self.keys), "pool out of rank order"
        assert self.keys == [c.sort_key for c in self.cands], "pool keys do not match their candidates"
        assert {c.req.req_id for c in self.cands} == set(self.members), "pool members out of step"
        assert self.ctx_sum == sum(c.ctx for c in self.cands), "pool context sum drifted"
        feasible: dict[float, int] = {}
        for c in self.cands:
            if c.feasible:
                feasible[c.density] = feasible.get(c.density, 0) + 1
        assert feasible == self._feasible, "pool feasible densities out of step"
        assert self.infeasible == {c.req.req_id: c for c in self.cands if not c.feasible}, "pool infeasible out of step"


def merged(fresh: list[Candidate], fresh_keys: list[tuple], pool: NewcomerPool) -> Iterator[Candidate]:
    """`fresh` (ranked, keys beside) and the pool's members in one rank order, lazily: the walk stops once
    every slot is taken, usually long before the pool's end. Keys are unique (they end with the request id),
    so this is the order one sort of both would give."""
    keys, cands = pool.keys, pool.cands
    j, n = 0, len(cands)
    for key, c in zip(fresh_keys, fresh):
        while j < n and keys[j] < key:
            yield cands[j]
            j += 1
        yield c
    yield from cands[j:]
