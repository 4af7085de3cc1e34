"""SLICE phase 2: the decode-mask matrix (arXiv 2510.18544, SLICE.md "Phase 2").

One row per scheduled request, `C = max_i v_i` columns; row i holds `v_i` ones. Each engine iteration
executes one column: its batch is every row with a 1 there. The mask is built incrementally, in the
order the selection walk admits rows, so the cost the capacity test saw is exactly the cost of the
matrix that runs.

Cost of one cycle = sum over columns of l(|column|) + ctx_coef * sum_i v_i * ctx_i. The context term of
`LatencyModel.decode_time` is linear in the batch's total context, so it splits per row whatever the
layout. With the `prefix` layout this equals the paper's sum_k (v_k - v_{k+1}) * l(k) over rates sorted
in descending order (see `prefix_cycle_time`).

Layouts:
- `prefix`: row i has ones in columns 0..v_i-1 (the paper's layout; cheapest, since l is sublinear).
- `spread`: row i has ones at (phase + floor(j*C/v_i)) mod C, j = 0..v_i-1: cyclic gaps differ by at most
  one column, so inter-token gaps are steadier. The phase is chosen to keep columns balanced (smallest
  resulting largest column, then smallest added cost), which also keeps iteration times even.
- `nested` (`slice_layout=nested`, issue 21): row i has ones in the first v_i columns of one fixed order
  of the C columns (`nested_order`: each next column the farthest from those before it). Every row's
  columns are a prefix of the same order, so the cost is the paper's prefix cost (slow rows stack into
  the same few wide columns, where l is flat: 8-15 rows cost ~125 ms on `paper-4060ti`), while the wide
  columns lie evenly over the cycle instead of first, so the fast rows in every column (real-time) lag
  their TPOT line by about one wide column at most, not by the whole run of wide columns prefix makes.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from sliceserve.core.latency import LatencyModel

DecodeTime = Callable[[int], float]   # a column of k rows, without the per-row context term


def prefix_cycle_time(rates: Sequence[int], decode_time: DecodeTime) -> float:
    """The paper's closed form: rates sorted descending, T = sum_k (v_k - v_{k+1}) * l(k), v_{m+1} = 0.
    (The reference code neither sorts nor indexes this sum correctly; SLICE.md.)"""
    v = sorted(rates, reverse=True) + [0]
    return sum((v[k] - v[k + 1]) * decode_time(k + 1) for k in range(len(v) - 1))


def spread_positions(rate: int, num_columns: int, phase: int = 0) -> list[int]:
    """Columns of a row with `rate` evenly spaced ones among `num_columns` columns."""
    if not 0 < rate <= num_columns:
        raise ValueError(f"a row needs 1..{num_columns} ones, got {rate}")
    return sorted((phase + (j * num_columns) // rate) % num_columns for j in range(rate))


@functools.lru_cache(maxsize=64)
def nested_order(num_columns: int) -> tuple[int, ...]:
    """The `nested` layout's column order: 0 first, then repeatedly the column whose cyclic distance to
    the nearest column already taken is largest (the lowest such index): any prefix of it is spread over
    the cycle (for 20 columns the first four are 0, 10, 5, 15)."""
    order, nearest = [0], [min(c, num_columns - c) for c in range(num_columns)]
    while len(order) < num_columns:
        c = max(range(num_columns), key=lambda i: (nearest[i], -i))
        order.append(c)
        nearest = [min(d, abs(i - c), num_columns - abs(i - c)) for i, d in enumerate(nearest)]
    return tuple(order)


# Column sizes from which a missing l(k) is computed together with every larger one up to the batch cap.
_VECTOR_FROM = 8


class _ColumnTimes(dict):
    """l(k) by k, computed on first use (`column_times`)."""

    def __init__(self, latency: LatencyModel, ctx_ref: float, max_k: int) -> None:
        super().__init__()
        self._latency, self._ctx_ref, self._max_k = latency, ctx_ref, max_k

    def __missing__(self, k: int) -> float:
        if _VECTOR_FROM <= k < self._max_k:
            # A column this full usually keeps growing row by row: the rest at once, in one numpy pass.
            self.update(zip(range(k, self._max_k + 1), self._latency.column_times(k, self._max_k, self._ctx_ref)))
            return self[k]
        t = self[k] = self._latency.column_time(k, self._ctx_ref)
        return t


def column_times(latency: LatencyModel, ctx_ref: float, max_k: int) -> Callable[[int], float]:
    """l(k) of a column at reference context `ctx_ref`, memoised per k: the mask asks for the same column
    sizes again and again (four times per admitted row), and the latency model does not move during one
    selection. A dict's own lookup: a hit runs no Python code. `max_k`: the largest column (batch cap)."""
    return _ColumnTimes(latency, ctx_ref, max_k).__getitem__


class DecodeMask:
    def __init__(self, layout: str, decode_time: DecodeTime, ctx_coef_s: float = 0.0,
                 max_column: int | None = None) -> None:
        if layout not in ("prefix", "spread", "nested"):
            raise ValueError(f"decode-mask layout must be prefix, spread or nested, got {layout!r}")
        self.layout = layout
        self._l = decode_time
        self._ctx_coef = ctx_coef_s
        self.max_column = max_column
        self.rows: dict[str, list[int]] = {}     # req_id -> its columns (insertion order kept)
        self._ctx: dict[str, float] = {}
        self.counts: list[int] = []              # |column c|
        self._base_cost = 0.0                    # sum_c l(|column c|)
        self._ctx_cost = 0.0

    # --- queries -------------------------------------------------------------------------------------
    @property
    def num_columns(self) -> int:
        return len(self.counts)

    def rate(self, req_id: str) -> int:
        return len(self.rows[req_id])

    def cost(self) -> float:
        """Predicted seconds for one pass over every column."""
        return self._base_cost + self._ctx_cost

    def columns(self) -> list[list[str]]:
        """Column c = the rows with a 1 in c, in row insertion order."""
        cols: list[list[str]] = [[] for _ in self.counts]
        for rid, positions in self.rows.items():
            for c in positions:
                cols[c].append(rid)
        return cols

    # --- trial and commit ----------------------------------------------------------------------------
    def added_cost(self, rate: int, ctx: float = 0.0) -> tuple[float, list[int] | None]:
        """(cost increase, positions) of adding a row with `rate` ones; positions None = would need a
        re-layout (spread with a new largest rate) and the cost is that of the re-laid matrix; inf if a
        column would exceed `max_column`."""
        if rate <= 0:
            raise ValueError(f"a row needs at least one 1, got rate {rate}")
        ctx_delta = self._ctx_coef * rate * ctx
        counts, l, max_column = self.counts, self._l, self.max_column
        num_columns = len(counts)
        if self.layout != "prefix" and rate > num_columns and self.rows:
            trial = self._relaid(extra=("", rate, ctx), num_columns=rate)
            return (float("inf") if trial is None else trial.cost() - self.cost()), None
        positions = list(range(rate)) if rate >= num_columns or self.layout == "prefix" else self._place(rate)
        delta = 0.0
        for c in positions:
            n = counts[c] if c < num_columns else 0
            if max_column is not None and n + 1 > max_column:
                return float("inf"), positions
            delta += l(n + 1) - l(n)
        return delta + ctx_delta, positions

    def add(self, req_id: str, rate: int, ctx: float = 0.0, positions: list[int] | None = None) -> None:
        if req_id in self.rows:
            raise ValueError(f"{req_id!r} already has a row")
        if self.layout != "prefix" and rate > len(self.counts) and self.rows:
            relaid = self._relaid(extra=(req_id, rate, ctx), num_columns=rate, enforce=False)
            assert relaid is not None
            self.__dict__.update(relaid.__dict__)
            return
        positions = self._place(rate) if positions is None else positions
        self._commit(req_id, positions, ctx)

    def remove(self, req_id: str) -> int:
        """Drop a row (columns may become empty at the end; trailing empty columns are cut). Returns its rate."""
        positions = self.rows.pop(req_id)
        ctx = self._ctx.pop(req_id)
        for c in positions:
            n = self.counts[c]
            self._base_cost += self._l(n - 1) - self._l(n)
            self.counts[c] = n - 1
        self._ctx_cost -= self._ctx_coef * len(positions) * ctx
        while self.counts and self.counts[-1] == 0:
            self.counts.pop()
        return len(positions)

    # --- internals -----------------------------------------------------------------------------------
    def _place(self, rate: int) -> list[int]:
        if self.layout == "prefix" or rate >= len(self.counts):
            return list(range(rate))
        if self.layout == "nested":
            return sorted(nested_order(self.num_columns)[:rate])
        best: tuple[int, float, int] | None = None
        best_pos: list[int] = []
        for phase in range(-(-self.num_columns // rate)):
            pos = spread_positions(rate, self.num_columns, phase)
            peak = max(self.counts[c] for c in pos) + 1
            delta = sum(self._l(self.counts[c] + 1) - self._l(self.counts[c]) for c in pos)
            key = (peak, delta, phase)
            if best is None or key < best:
                best, best_pos = key, pos
        return best_pos

    def _commit(self, req_id: str, positions: list[int], ctx: float) -> None:
        counts, l = self.counts, self._l
        for c in positions:
            while c >= len(counts):
                counts.append(0)
            n = counts[c]
            self._base_cost += l(n + 1) - l(n)
            counts[c] = n + 1
        self.rows[req_id] = positions
        self._ctx[req_id] = ctx
        self._ctx_cost += self._ctx_coef * len(positions) * ctx

    def _relaid(self, extra: tuple[str, int, float], num_columns: int, enforce: bool = True) -> "DecodeMask | None":
        """A spread matrix with `num_columns` columns holding every row again (insertion order) plus `extra`."""
        fresh = DecodeMask(self.layout, self._l, self._ctx_coef, self.max_column)
        fresh.counts = [0] * num_columns
        rows = [(rid, len(p), self._ctx[rid]) for rid, p in self.rows.items()] + [extra]
        for rid, rate, ctx in rows:
            pos = fresh._place(rate)
            if enforce and self.max_column is not None and any(fresh.counts[c] + 1 > self.max_column for c in pos):
                return None
            fresh._commit(rid, pos, ctx)
        return fresh
