"""The slack reserve of top-density members (`slice_bank_tokens`): lower-density work (best effort, lower-density
members' prefill and decodes ahead of their own line) may not spend a real-time member's last N TPOTs of banked
slack, so a real-time newcomer's prompt finds slack to run in. Without it the non-real-time classes keep every
real-time stream on its TPOT line, and two real-time arrivals close together cannot both get their prompt in."""
from __future__ import annotations

import pytest

from sliceserve.core.outputs import ModelOutput
from tests.slice.conftest import make_req, make_slice
from tests.slice.test_policy import run, tpot


def _scene():
    """Two real-time streams, eight lower-utility members with a 250 ms TPOT, forty chat requests that overload
    the device, and two real-time newcomers 30 ms apart (prompts of 205 and 181 tokens, 0.5 s TTFT)."""
    rts = [make_req(f"rt{i}", arrival=0.1 * i, prompt=64, max_tokens=150) for i in range(2)]
    nrt = [make_req(f"n{i}", arrival=0.05 * i, prompt=64, max_tokens=300, ttft=5.0, tpot=0.25, utility=1.0,
                    cls="nrt") for i in range(8)]
    chat = [make_req(f"c{i}", arrival=0.01 * i, prompt=300, max_tokens=200, ttft=1.0, tpot=0.1, utility=1.0,
                     cls="chat") for i in range(40)]
    a = make_req("a", arrival=3.0, prompt=205, max_tokens=40)
    b = make_req("b", arrival=3.03, prompt=181, max_tokens=40)
    return rts + [a, b], nrt, rts + nrt + chat + [a, b]


def test_reserve_lets_two_close_real_time_newcomers_meet_ttft_and_tpot(paper):
    realtime, _, everything = _scene()
    run(make_slice(paper.copy()), everything, paper)
    a, b = realtime[-2:]
    assert a.ttft_s <= 0.5 and b.ttft_s <= 0.5, (a.ttft_s, b.ttft_s)
    assert all(tpot(r) <= 0.05 + 1e-9 for r in realtime), [tpot(r) for r in realtime]
    assert all(r.num_output_tokens == r.max_tokens for r in everything)   # nothing starved or lost


def test_without_the_reserve_the_second_newcomer_is_late(paper):
    # The premise of the test above: the scene does stress the reserve.
    realtime, _, everything = _scene()
    run(make_slice(paper.copy(), slice_bank_tokens=0), everything, paper)
    assert realtime[-1].ttft_s > 0.5, realtime[-1].ttft_s


@pytest.mark.parametrize("bad", [-1, 1.5, "8"])
def test_bank_tokens_must_be_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="slice_bank_tokens"):
        make_slice(slice_bank_tokens=bad)


def _reserve_with_nrt250_on_top(paper, extra_waiting: int, **overrides):
    """An nrt-250 stream decoding (the top-density member), a real-time request seen earlier and gone,
    an nrt-100 newcomer, and `extra_waiting` more requests queued; returns the reserve after a rebuild."""
    sched = make_slice(paper.copy(), **overrides)
    rt = make_req("rt", prompt=32, max_tokens=2)
    sched.add_request(rt, 0.0)
    now = 0.0
    while sched.has_unfinished():
        out = sched.schedule(now)
        sched.update(out, ModelOutput(sampled={r: 5 for r in out.requests if out.samples(r)}, elapsed_s=0.02),
                     now + 0.02)
        now += 0.02
    sched.add_request(make_req("n250", arrival=now, prompt=64, max_tokens=300, ttft=5.0, tpot=0.25, utility=1.0,
                               cls="nrt-250"), now)
    for i in range(extra_waiting):
        sched.add_request(make_req(f"w{i}", arrival=now, prompt=600, max_tokens=300, ttft=5.0, tpot=0.25,
                                   utility=1.0, cls="nrt-250"), now)
    sched.add_request(make_req("n100", arrival=now, prompt=200, max_tokens=50, ttft=1.0, tpot=0.1, utility=1.0,
                               cls="nrt-100"), now)
    sched.schedule(now)
    return sched._bank_s


def test_light_load_reserve_is_sized_for_the_tightest_class_not_the_top_member(paper):
    # The top-density member is an nrt-250 stream: its own reserve would be 16 x 250 ms = 4 s.
    assert _reserve_with_nrt250_on_top(paper, 0, slice_bank_tightest=False) == pytest.approx(4.0)
    # At light load it is capped at 16 x the tightest TPOT seen (the real-time class's 50 ms).
    assert _reserve_with_nrt250_on_top(paper, 0) == pytest.approx(0.8)
    # Under load (more requests than sequence slots) the full reserve stays.
    assert _reserve_with_nrt250_on_top(paper, 16) == pytest.approx(4.0)
