"""`slice_lend_reserve`: at light load a lower-density member's last prompt chunk may spend the top-density
reserve (`slice_bank_tokens`) when its TTFT deadline is nearer than the reserve could be banked back; the
real-time members keep their own TPOT lines. CPU only."""
from __future__ import annotations

from tests.slice.conftest import make_req, make_slice
from tests.slice.test_policy import run, tpot


def _scene():
    """The Azure-trace case (0.6 req/s, seed 3): beside a decoding nrt-100 stream, a 1,353-token nrt-100 prompt
    (TTFT 1 s) is being prefilled in 512-token chunks when a real-time request arrives; the real-time prompt
    shares the third chunk, which leaves the nrt-100 prompt 14 tokens short just as the real-time stream
    starts with no slack banked."""
    other = make_req("other", arrival=0.0, prompt=200, max_tokens=200, ttft=1.0, tpot=0.1, utility=1.0,
                     cls="nrt-100")
    nrt = make_req("nrt", arrival=1.0, prompt=1353, max_tokens=60, ttft=1.0, tpot=0.1, utility=1.0, cls="nrt-100")
    rt = make_req("rt", arrival=1.25, prompt=197, max_tokens=60)
    return other, nrt, rt


def test_last_chunk_due_soon_spends_the_reserve_at_light_load(paper):
    other, nrt, rt = _scene()
    run(make_slice(paper.copy(), slice_lend_reserve=True), [other, nrt, rt], paper)
    assert nrt.ttft_s <= 1.0, nrt.ttft_s
    assert rt.ttft_s <= 0.5 and tpot(rt) <= 0.05 + 1e-9, (rt.ttft_s, tpot(rt))
    assert tpot(other) <= 0.1 and tpot(nrt) <= 0.1


def test_without_lending_the_last_chunk_waits_past_its_ttft(paper):
    # The premise: the reserve is what holds the 14 tokens back.
    other, nrt, rt = _scene()
    run(make_slice(paper.copy(), slice_lend_reserve=False), [other, nrt, rt], paper)
    assert nrt.ttft_s > 1.0, nrt.ttft_s
    other, nrt, rt = _scene()
    run(make_slice(paper.copy(), slice_lend_reserve=False, slice_bank_tokens=0), [other, nrt, rt], paper)
    assert nrt.ttft_s <= 1.0, nrt.ttft_s


def test_under_load_the_reserve_stays_whole(paper):
    # More requests than sequence slots: lending is off whatever the deadline (real-time fell at 2.75 req/s).
    _, nrt, rt = _scene()
    sched = make_slice(paper.copy(), slice_lend_reserve=True, max_num_seqs=1)
    sched.add_request(nrt, 1.0)
    sched.add_request(rt, 1.25)
    sched._bank_s = 0.8
    assert sched._keeps_reserve(nrt, 2048, 1.9)
    light = make_slice(paper.copy(), slice_lend_reserve=True)
    light.add_request(nrt, 1.0)
    light._bank_s = 0.8                               # a real-time member's 16 x 50 ms reserve
    assert not light._keeps_reserve(nrt, 2048, 1.9)   # due in 0.1 s < the 0.8 s reserve, prompt fits the budget
    assert light._keeps_reserve(nrt, 512, 1.9)        # this chunk would not complete the prompt
    assert light._keeps_reserve(nrt, 2048, 1.1)       # due in 0.9 s: it can wait for the reserve
    off = make_slice(paper.copy(), slice_lend_reserve=False)
    off.add_request(nrt, 1.0)
    off._bank_s = 0.8
    assert off._keeps_reserve(nrt, 2048, 1.9)
