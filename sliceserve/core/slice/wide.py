"""SLICE's decode mask with wide columns (`slice_wide_columns`, issue 21: the Azure trace).

The `spread` layout balances columns: every column holds about the same rows. On `paper-4060ti` a column's
time is flat from 8 rows on (8-15 rows: 123-126 ms) while a 4-row column costs 50 ms, so balanced columns
are the dearest way to serve slow rows beside a real-time row that sits in every column. The metric is the
mean TPOT over a request, so a cycle may also stack slow rows into a few wide columns spread over the cycle
and keep the others small (the `nested` layout, `mask.nested_order`): two real-time streams beside 14
nrt-250 streams cost 4 x l(16) + 16 x l(2) = 932 ms there, against more than P balanced (10 fit).
Stacking is not always cheaper: the jump from 7 to 8 rows (83 -> 125 ms) makes balanced columns win for
some mixes (three real-time streams and five nrt-250: 20 x l(4) = 1,000 ms balanced, 1,108 ms stacked).

`WideMask` therefore keeps both layouts side by side, row for row, and answers as the cheaper one that
still fits the cycle: a row is admitted when either layout fits it, a layout that no longer fits is
dropped, and the mask that runs is the cheapest left. Its interface is `DecodeMask`'s.
"""
from __future__ import annotations

from sliceserve.core.slice.mask import DecodeMask, DecodeTime


class WideMask:
    def __init__(self, layout: str, decode_time: DecodeTime, ctx_coef_s: float, max_column: int | None,
                 cap_s: float) -> None:
        layouts = [layout] if layout == "nested" else [layout, "nested"]
        self._masks = [DecodeMask(name, decode_time, ctx_coef_s, max_column) for name in layouts]
        self._cap = cap_s
        self._best = self._masks[0]
        self._last: tuple[int, float, list[tuple[DecodeMask, float, list[int] | None]]] | None = None

    # --- DecodeMask's queries, answered by the cheapest layout still in the running ---------------------
    @property
    def layout(self) -> str:
        return self._best.layout

    @property
    def rows(self) -> dict[str, list[int]]:
        return self._best.rows

    @property
    def counts(self) -> list[int]:
        return self._best.counts

    @property
    def num_columns(self) -> int:
        return self._best.num_columns

    def rate(self, req_id: str) -> int:
        return self._best.rate(req_id)

    def cost(self) -> float:
        return self._best.cost()

    def columns(self) -> list[list[str]]:
        return self._best.columns()

    # --- trial and commit ----------------------------------------------------------------------------
    def added_cost(self, rate: int, ctx: float = 0.0) -> tuple[float, None]:
        """Cost increase over `cost()` of adding the row in whichever layout ends cheapest (inf if none can)."""
        trials = [(m, *m.added_cost(rate, ctx)) for m in self._masks]
        self._last = (rate, ctx, trials)
        best = min(m.cost() + d for m, d, _ in trials)
        return best - self.cost(), None

    def add(self, req_id: str, rate: int, ctx: float = 0.0, positions: list[int] | None = None) -> None:
        trials = self._last[2] if self._last is not None and self._last[:2] == (rate, ctx) else \
            [(m, *m.added_cost(rate, ctx)) for m in self._masks]
        self._last = None
        # Layouts the row pushes past the cycle (or a column past the batch cap) are dropped; if every one
        # would be (a caller that adds without testing, e.g. work conservation), the cheapest stays.
        keep = ([t for t in trials if t[0].cost() + t[1] <= self._cap]
                or [min(trials, key=lambda t: t[0].cost() + t[1])])
        for m, _, pos in keep:
            m.add(req_id, rate, ctx, pos)
        self._masks = [t[0] for t in keep]
        self._best = min(self._masks, key=DecodeMask.cost)

    def remove(self, req_id: str) -> int:
        self._last = None
        rate = 0
        for m in self._masks:
            rate = m.remove(req_id)
        self._best = min(self._masks, key=DecodeMask.cost)
        return rate
