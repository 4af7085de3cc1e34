"""Decode-mask matrix: the paper's cycle-time formula, layouts and their exact cost."""
from __future__ import annotations

import itertools

import pytest

from sliceserve.core.slice.mask import DecodeMask, prefix_cycle_time, spread_positions


def _l(paper):
    return lambda k: paper.decode_time(k)


def test_worked_example_costs_454_ms(paper):
    # Rates 20, 10, 4 per cycle: 4 columns hold 3 rows, 6 hold 2, 10 hold 1.
    expected = 4 * paper.decode_time(3) + 6 * paper.decode_time(2) + 10 * paper.decode_time(1)
    assert expected == pytest.approx(0.454)
    assert prefix_cycle_time([4, 20, 10], _l(paper)) == pytest.approx(0.454)  # unsorted input is sorted
    mask = DecodeMask("prefix", _l(paper))
    for rid, v in (("a", 4), ("b", 20), ("c", 10)):
        mask.add(rid, v)
    assert mask.cost() == pytest.approx(0.454)
    assert mask.counts == [3] * 4 + [2] * 6 + [1] * 10
    cols = mask.columns()
    assert len(cols) == 20 and all(cols)          # no empty columns
    assert sorted(cols[0]) == ["a", "b", "c"] and cols[19] == ["b"]


def test_added_cost_matches_commit(paper):
    mask = DecodeMask("prefix", _l(paper))
    before = 0.0
    for i, v in enumerate([7, 20, 3, 12, 20, 1]):
        delta, pos = mask.added_cost(v)
        mask.add(f"r{i}", v, positions=pos)
        assert mask.cost() == pytest.approx(before + delta)
        before = mask.cost()
    assert mask.cost() == pytest.approx(prefix_cycle_time([7, 20, 3, 12, 20, 1], _l(paper)))


@pytest.mark.parametrize("rate,cols", [(1, 20), (3, 20), (7, 20), (10, 20), (20, 20), (5, 13)])
def test_spread_rows_are_evenly_spaced(rate, cols):
    pos = spread_positions(rate, cols, phase=2 % max(1, cols // rate))
    assert len(set(pos)) == rate
    gaps = [(b - a) % cols for a, b in zip(pos, pos[1:] + pos[:1])] if rate > 1 else [cols]
    assert max(gaps) - min(gaps) <= 1 and sum(gaps) == cols


def test_spread_cost_is_column_sum_and_balanced(paper):
    mask = DecodeMask("spread", _l(paper))
    rates = {"a": 10, "b": 4, "c": 5, "d": 20, "e": 2}   # "d" arrives last and forces a re-layout
    for rid, v in rates.items():
        mask.add(rid, v)
    cols = mask.columns()
    assert len(cols) == 20 and all(cols)
    for rid, v in rates.items():
        pos = mask.rows[rid]
        assert len(pos) == v
        gaps = [(b - a) % 20 for a, b in zip(pos, pos[1:] + pos[:1])] if v > 1 else [20]
        assert max(gaps) - min(gaps) <= 1, (rid, pos)
    assert mask.cost() == pytest.approx(sum(paper.decode_time(len(c)) for c in cols))
    # Phases keep columns balanced: no column holds every row, as prefix's first column does.
    sizes = [len(c) for c in cols]
    assert sum(sizes) == 41 and max(sizes) <= 3
    # Spreading costs at least as much as packing: l is sublinear, and prefix packs.
    assert mask.cost() >= prefix_cycle_time(list(rates.values()), _l(paper)) - 1e-12


def test_max_column_and_remove(paper):
    mask = DecodeMask("prefix", _l(paper), max_column=2)
    mask.add("a", 5)
    mask.add("b", 3)
    assert mask.added_cost(1)[0] == float("inf")    # column 0 is full
    assert mask.remove("a") == 5
    assert mask.counts == [1, 1, 1]                 # trailing empty columns are cut
    assert mask.cost() == pytest.approx(3 * paper.decode_time(1))


def test_rejects_bad_input(paper):
    with pytest.raises(ValueError, match="prefix, spread or nested"):
        DecodeMask("zigzag", _l(paper))
    mask = DecodeMask("prefix", _l(paper))
    with pytest.raises(ValueError):
        mask.added_cost(0)
    mask.add("a", 2)
    with pytest.raises(ValueError, match="already"):
        mask.add("a", 1)
