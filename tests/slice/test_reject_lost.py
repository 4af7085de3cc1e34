"""SLICE's early refusal of requests whose TTFT is lost (`slice_reject_lost`): who is refused, when, how
the refusal reaches the caller, and that the served requests lose nothing by it. CPU only."""
from __future__ import annotations

from sliceserve.core.outputs import ModelOutput
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason
from sliceserve.sim import SimulatedExecutor, Simulator
from tests.slice.conftest import make_req, make_slice


def _overload():
    """Forty chat requests at once (1 s TTFT, 300-token prompts): the device cannot start them all in time."""
    return [make_req(f"c{i}", arrival=0.01 * i, prompt=300, max_tokens=60, ttft=1.0, tpot=0.1, utility=1.0,
                     cls="chat") for i in range(40)]


def _simulate(sched, reqs, paper):
    sim = Simulator(EngineCore(sched, SimulatedExecutor(paper.copy(), 0.0, 0)), max_time_s=600)
    sim.add_arrivals(reqs)
    return sim.run()


def test_only_requests_past_their_ttft_without_a_token_are_refused(paper):
    reqs = _overload()
    sched = make_slice(paper.copy(), slice_reject_lost=True)
    _simulate(sched, reqs, paper)
    refused = [r for r in reqs if r.finish_reason is FinishReason.REJECTED]
    assert refused and sched.num_rejected == len(refused)
    for r in refused:
        assert r.num_output_tokens == 0 and "TTFT" in r.error
        assert r.finished_s > r.arrival_s + r.slo.ttft_s   # refused only once the bound had passed
    # Everyone else was served to the end, and every request that got a first token kept it (none refused).
    served = [r for r in reqs if r.finish_reason is not FinishReason.REJECTED]
    assert all(r.num_output_tokens == r.max_tokens for r in served)


def test_refusal_frees_time_for_requests_that_can_still_make_it(paper):
    kept, refused = _overload(), _overload()
    _simulate(make_slice(paper.copy(), slice_reject_lost=False), kept, paper)
    _simulate(make_slice(paper.copy(), slice_reject_lost=True), refused, paper)
    met = lambda reqs: sum(r.ttft_s is not None and r.ttft_s <= r.slo.ttft_s for r in reqs)  # noqa: E731
    assert all(r.finish_reason is not FinishReason.REJECTED for r in kept)
    # The lost requests no longer take best-effort time: the device is done with the rest far sooner.
    assert max(r.finished_s for r in refused) < max(r.finished_s for r in kept)
    assert met(refused) >= met(kept)


def test_refused_request_is_handed_back_by_the_next_update(paper):
    sched = make_slice(paper.copy(), slice_reject_lost=True)
    late = make_req("late", arrival=0.0, prompt=32, ttft=0.5)
    sched.add_request(late, 0.0)
    # Nothing ran for 0.6 s (e.g. the engine was busy elsewhere): the next plan refuses it.
    out = sched.schedule(0.6)
    assert not out.requests
    ended = sched.update(out, ModelOutput(sampled={}, elapsed_s=0.0), 0.6)
    assert ended == [late] and late.finish_reason is FinishReason.REJECTED
    assert not sched.has_unfinished() and sched.kv.num_free_blocks == sched.kv.num_blocks
    # Switched off, the same request is kept and served as best effort.
    keep = make_slice(paper.copy(), slice_reject_lost=False)
    keep.add_request(make_req("late", arrival=0.0, prompt=32, ttft=0.5), 0.0)
    assert "late" in keep.schedule(0.6).requests
