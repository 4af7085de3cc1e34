"""`slice_rank` = work: selection by utility, then started streams, then utility per output token left,
instead of the paper's utility per decode step per cycle (U / v). CPU only."""
from __future__ import annotations

from sliceserve.core.outputs import ModelOutput
from tests.slice.conftest import make_req, make_slice


def _selected(paper, rank: str, reqs, slots: int = 1, now: float = 0.0) -> set[str]:
    sched = make_slice(paper.copy(), slice_rank=rank, max_num_seqs=slots)
    for r in reqs:
        sched.add_request(r, r.arrival_s)
    sched.schedule(now)
    return set(sched._members)


def test_work_rank_prefers_the_request_that_frees_its_slot_soonest(paper):
    def reqs():
        long_loose = make_req("long250", prompt=64, max_tokens=300, ttft=5.0, tpot=0.25, utility=1.0, cls="nrt-250")
        short_tight = make_req("short100", prompt=64, max_tokens=20, ttft=1.0, tpot=0.1, utility=1.0, cls="nrt-100")
        return [long_loose, short_tight]
    # The paper's density U / v favours the loose TPOT (1/4 > 1/10) although it holds the slot 15x longer.
    assert _selected(paper, "rate", reqs()) == {"long250"}
    assert _selected(paper, "work", reqs()) == {"short100"}


def test_utility_still_comes_first(paper):
    rt = make_req("rt", prompt=64, max_tokens=64, ttft=0.5, tpot=0.05, utility=100.0)
    tiny = make_req("tiny", prompt=8, max_tokens=1, ttft=1.0, tpot=0.1, utility=1.0, cls="nrt-100")
    assert _selected(paper, "work", [tiny, rt]) == {"rt"}


def test_a_started_stream_is_not_displaced_by_a_shorter_newcomer_of_its_class(paper):
    sched = make_slice(paper.copy(), slice_rank="work", max_num_seqs=1)
    started = make_req("started", prompt=32, max_tokens=60)
    sched.add_request(started, 0.0)
    now = 0.0
    while not started.output_token_ids:   # run it until its first token
        out = sched.schedule(now)
        sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
        sched.update(out, ModelOutput(sampled=sampled, elapsed_s=0.02), now + 0.02)
        now += 0.02
    sched.add_request(make_req("newcomer", arrival=now, prompt=32, max_tokens=16), now)
    sched.schedule(now)
    assert set(sched._members) == {"started"}
