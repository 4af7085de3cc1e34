"""`slice_wide_columns`: the decode mask may stack slow rows into a few wide columns spread over the cycle,
with the real-time rows alone in the others (`core/slice/wide.py`, `mask.nested_order`). CPU only."""
from __future__ import annotations

import pytest

from sliceserve.core.latency import load_profile
from sliceserve.core.slice.mask import DecodeMask, nested_order
from sliceserve.core.slice.wide import WideMask
from sliceserve.request import FinishReason
from sliceserve.engine.core import EngineCore
from sliceserve.sim import SimulatedExecutor, Simulator
from tests.slice.conftest import make_req, make_slice
from tests.slice.test_policy import tpot

CAP = 1.0 + 1e-9    # P = 1 s, no margin (the selection's cap)


def _fill(mask, rates: list[tuple[str, int]]) -> list[str]:
    """Add rows in order while the cycle fits (the selection's test); the ids admitted."""
    admitted = []
    for rid, rate in rates:
        delta, pos = mask.added_cost(rate)
        if mask.cost() + delta <= CAP:
            mask.add(rid, rate, positions=pos)
            admitted.append(rid)
    return admitted


def _rt_and_slow(num_rt: int, num_slow: int) -> list[tuple[str, int]]:
    return [(f"rt{i}", 20) for i in range(num_rt)] + [(f"s{i}", 4) for i in range(num_slow)]


def test_nested_order_prefixes_spread_over_the_cycle():
    order = nested_order(20)
    assert sorted(order) == list(range(20))
    assert sorted(order[:4]) == [0, 5, 10, 15]
    assert sorted(order[:2]) == [0, 10]
    for v in range(2, 21):          # any prefix: no gap between its columns over twice the even gap (+1)
        pos = sorted(order[:v])
        gaps = [(b - a) % 20 for a, b in zip(pos, pos[1:] + pos[:1])]
        assert max(gaps) <= 2 * (20 // v) + 1, (v, pos)


def test_two_realtime_streams_leave_room_for_fourteen_slow_streams_in_wide_columns(paper):
    l = paper.decode_time
    balanced = DecodeMask("spread", l, 0.0, 16)
    assert len(_fill(balanced, _rt_and_slow(2, 14))) == 12      # 2 real-time + 10 nrt-250: columns of ~4.5
    wide = WideMask("spread", l, 0.0, 16, CAP)
    assert len(_fill(wide, _rt_and_slow(2, 14))) == 16
    assert wide.layout == "nested"
    # Four wide columns of all 16 rows, a quarter of the cycle apart; the other 16 hold the real-time rows alone.
    cols = wide.columns()
    assert [c for c, rows in enumerate(cols) if len(rows) == 16] == [0, 5, 10, 15]
    assert all(sorted(rows) == ["rt0", "rt1"] for c, rows in enumerate(cols) if c % 5)
    assert wide.cost() == pytest.approx(4 * l(16) + 16 * l(2))
    assert wide.cost() <= 1.0


def test_balanced_columns_stay_where_stacking_costs_more(paper):
    # Three real-time streams and five nrt-250: balanced 20 x l(4) = 1,000 ms; stacked 4 x l(8) + 16 x l(3) > P.
    wide = WideMask("spread", paper.decode_time, 0.0, 16, CAP)
    assert len(_fill(wide, _rt_and_slow(3, 5))) == 8
    assert wide.layout == "spread" and max(wide.counts) == 4
    # Removing a row drops it from both layouts; the added cost matches the commit.
    assert wide.remove("s4") == 4
    delta, _ = wide.added_cost(4)
    before = wide.cost()
    wide.add("s4", 4)
    assert wide.cost() == pytest.approx(before + delta)


def _scene():
    """Two real-time streams (TPOT 50 ms) and fourteen nrt-250 streams (TPOT 250 ms), all short prompts."""
    rts = [make_req(f"rt{i}", arrival=0.01 * i, prompt=32, max_tokens=120) for i in range(2)]
    slow = [make_req(f"s{i}", arrival=0.05 + 0.01 * i, prompt=32, max_tokens=40, tpot=0.25, ttft=2.0, utility=1.0,
                     cls="nrt-250") for i in range(14)]
    return rts, slow


class _Recorder(SimulatedExecutor):
    def __init__(self, device) -> None:
        super().__init__(device)
        self.batches: list[tuple[int, bool]] = []    # (decode rows, every real-time row among them)

    def execute(self, sched):
        decode = set(sched.decode)
        if decode and not sched.prefill:
            self.batches.append((len(decode), {"rt0", "rt1"} <= decode))
        return super().execute(sched)


def _run(wide: bool):
    rts, slow = _scene()
    sched = make_slice(load_profile("paper-4060ti"), slice_wide_columns=wide)
    recorder = _Recorder(load_profile("paper-4060ti"))
    sim = Simulator(EngineCore(sched, recorder), max_time_s=300.0)
    sim.add_arrivals(rts + slow)
    sim.run()
    return rts, slow, recorder.batches


def test_cycle_runs_realtime_alone_in_small_columns_and_slow_work_in_wide_ones():
    rts, slow, batches = _run(wide=True)
    for r in rts + slow:
        assert r.finish_reason is FinishReason.LENGTH
    for r in rts:                              # real-time's mean TPOT holds through the 125 ms wide columns
        assert r.ttft_s <= 0.5 and tpot(r) <= 0.05, (r.req_id, r.ttft_s, tpot(r))
    for r in slow:
        assert tpot(r) <= 0.25, (r.req_id, tpot(r))
    # While all 16 stream: wide columns with every row, and columns with the two real-time rows alone.
    assert (16, True) in batches and (2, True) in batches
    assert max(k for k, _ in batches) == 16


def test_balanced_mask_serves_the_slow_streams_later():
    # The premise: without wide columns only ten nrt-250 streams fit beside the two real-time ones, so the
    # batch never holds all 16 and the slow streams finish later.
    rts, slow, batches = _run(wide=False)
    assert max(k for k, _ in batches) < 16
    for r in rts:
        assert tpot(r) <= 0.05
    _, wide_slow, _ = _run(wide=True)
    last = max(r.token_times_s[-1] for r in slow)
    assert max(r.token_times_s[-1] for r in wide_slow) < last - 0.5, last
