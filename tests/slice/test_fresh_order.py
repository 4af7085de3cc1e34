"""`slice_fresh_order`: the order among never-started candidates of equal utility (core/slice/fresh.py). CPU only."""
from __future__ import annotations

from sliceserve.core.outputs import ModelOutput
from tests.slice.conftest import make_req, make_slice


def _selected(paper, mode: str, reqs, now: float) -> set[str]:
    sched = make_slice(paper.copy(), slice_fresh_order=mode, max_num_seqs=1)
    for r in reqs:
        sched.add_request(r, r.arrival_s)
    sched.schedule(now)
    return set(sched._members)


def _pair():
    # Two fresh real-time requests for one slot: the earlier has the nearer TTFT deadline but more to write.
    early = make_req("early", arrival=0.0, prompt=64, max_tokens=60)
    late = make_req("late", arrival=0.2, prompt=64, max_tokens=20)
    return [early, late]


def test_off_ranks_fresh_equals_by_tokens_left(paper):
    assert _selected(paper, "off", _pair(), now=0.2) == {"late"}


def test_deadline_ranks_fresh_equals_by_ttft_deadline(paper):
    assert _selected(paper, "deadline", _pair(), now=0.2) == {"early"}


def test_progress_puts_a_prompt_in_progress_before_a_fresh_one(paper):
    for mode, first in (("off", "late"), ("progress", "early")):
        sched = make_slice(paper.copy(), slice_fresh_order=mode)
        early, late = _pair()
        early.num_computed_tokens = 32        # half its prompt is in (a chunk ran before `late` came)
        cands = [sched.candidates.build(r, 0.2, sched.config, sched.cap_s) for r in (early, late)]
        assert min(cands, key=lambda c: c.sort_key).req.req_id == first, mode


def test_started_streams_keep_their_place(paper):
    sched = make_slice(paper.copy(), slice_fresh_order="deadline")
    started, fresh = _pair()
    started.output_token_ids.append(5)
    started.token_times_s.append(0.1)
    started.num_computed_tokens = 65
    cands = [sched.candidates.build(r, 0.2, sched.config, sched.cap_s) for r in (started, fresh)]
    assert cands[0].tier == 0.0 and min(cands, key=lambda c: c.sort_key).req is started


def _started(rid: str, cls: str, utility: float, tpot: float, max_tokens: int, n_out: int):
    r = make_req(rid, prompt=32, max_tokens=max_tokens, ttft=5.0, tpot=tpot, utility=utility, cls=cls)
    r.output_token_ids.extend([5] * n_out)
    r.token_times_s.extend(0.1 + 0.01 * i for i in range(n_out))
    r.num_computed_tokens = 32 + n_out - 1
    return r


def _first(paper, mode: str, reqs, now: float = 0.2) -> str:
    sched = make_slice(paper.copy(), slice_started_first=mode)
    cands = [sched.candidates.build(r, now, sched.config, sched.cap_s) for r in reqs]
    return min(cands, key=lambda c: c.sort_key).req.req_id


def test_valued_lets_a_short_default_newcomer_pass_a_long_started_stream(paper):
    # A started nrt-250 stream with 390 tokens to go against a fresh nrt-100 request of 20: under "all" the
    # started stream keeps its place (and its slot, ~100 s); under "valued" the one that frees a slot soonest.
    def reqs():
        return [_started("long250", "nrt-250", 1.0, 0.25, 400, 10),
                make_req("short100", arrival=0.15, prompt=32, max_tokens=20, ttft=1.0, tpot=0.1, utility=1.0,
                         cls="nrt-100")]
    assert _first(paper, "all", reqs()) == "long250"
    assert _first(paper, "valued", reqs()) == "short100"


def test_valued_keeps_started_first_for_real_time(paper):
    def reqs():
        return [_started("rt_long", "realtime", 100.0, 0.05, 200, 10),
                make_req("rt_short", arrival=0.15, prompt=32, max_tokens=20)]
    assert _first(paper, "valued", reqs()) == "rt_long"


def test_valued_changes_which_stream_the_policy_selects(paper):
    """End to end through schedule(): one slot, a started long nrt-250 stream and a short nrt-100 newcomer."""
    for mode, member in (("all", "long250"), ("valued", "short100")):
        sched = make_slice(paper.copy(), slice_started_first=mode, max_num_seqs=1)
        long250 = make_req("long250", prompt=32, max_tokens=400, ttft=5.0, tpot=0.25, utility=1.0, cls="nrt-250")
        sched.add_request(long250, 0.0)
        now = 0.0
        while len(long250.output_token_ids) < 3:
            out = sched.schedule(now)
            sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
            sched.update(out, ModelOutput(sampled=sampled, elapsed_s=0.02), now + 0.02)
            now += 0.02
        sched.add_request(make_req("short100", arrival=now, prompt=32, max_tokens=20, ttft=1.0, tpot=0.1,
                                   utility=1.0, cls="nrt-100"), now)
        sched.schedule(now)
        assert set(sched._members) == {member}, mode
