"""Which decoding sequences share one attention call."""
from __future__ import annotations

import math

from sliceserve.model.decode_groups import group_by_length


def _cost(lengths, groups, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def test_every_sequence_in_exactly_one_group():
    lengths = [300, 17, 600, 17, 120, 599, 1]
    groups = group_by_length(lengths, 64)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))


def test_far_apart_lengths_split_close_ones_share():
    # Padding 100 to 600 wastes 500 tokens, more than a call's overhead; 598 vs 600 wastes 2.
    groups = group_by_length([100, 600, 598, 102], 128)
    assert sorted(sorted(g) for g in groups) == [[0, 3], [1, 2]]


def test_infinite_overhead_keeps_one_call_and_zero_splits_by_length():
    lengths = [5, 9, 5, 40]
    assert group_by_length(lengths, math.inf) == [[0, 2, 1, 3]]
    assert sorted(sorted(g) for g in group_by_length(lengths, 0.0)) == [[0, 2], [1], [3]]
    assert group_by_length([], 10) == []


def test_split_is_optimal_for_its_cost():
    # Brute force over every split of the sorted order into consecutive runs.
    lengths = [10, 250, 40, 260, 90, 35, 700]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = math.inf
    for mask in range(1 << (len(order) - 1)):
        groups, start = [], 0
        for i in range(1, len(order)):
            if mask >> (i - 1) & 1:
                groups.append(order[start:i])
                start = i
        groups.append(order[start:])
        best = min(best, _cost(lengths, groups, 50))
    assert _cost(lengths, group_by_length(lengths, 50), 50) == best
