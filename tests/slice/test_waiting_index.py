"""SLICE's waiting index (issue 21: decision cost): candidates of never-run requests built on arrival and kept
ranked with their totals must give the decisions a rebuild that built every candidate itself gave. Checked
step by step against that rebuild (kept here as the oracle) on random bursts with every kind of waiting
request: fresh, e2e-only, preempted, boosted, past its TTFT, with the latency model moved between the
arrivals and the decision. CPU only."""
from __future__ import annotations

import math
import random
from operator import attrgetter

import pytest

from sliceserve.core.outputs import ModelOutput
from sliceserve.core.policies.slice import SliceScheduler
from sliceserve.core.slice.candidates import CandidateBuilder, ttft_lost
from sliceserve.core.slice.pool import NewcomerPool, merged
from sliceserve.core.slice.selection import Candidate, Population, SelectionParams, select
from sliceserve.sim import SimulatedExecutor
from tests.slice.conftest import make_req, make_slice


class _Oracle(SliceScheduler):
    """SLICE rebuilding as before the index: every waiting request visited, never-run ones cached on first
    sight (the code of 5889237's `_rebuild`, `_waiting_candidate` and `_reject_lost`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.old_cached: dict[str, Candidate] = {}

    def _candidate(self, req, now):
        return self.candidates.build(req, now, self.config, self.cap_s)

    def on_finish(self, req, now):
        super().on_finish(req, now)
        self.old_cached.pop(req.req_id, None)

    def _waiting_candidate(self, req, now):
        c = self.old_cached.get(req.req_id)
        if req.slo.e2e_s is not None:
            return self._candidate(req, now)
        if c is None or c.req is not req:
            c = self.old_cached[req.req_id] = self._candidate(req, now)
        elif c.feasible and req.slo.ttft_s is not None and now > req.ttft_deadline_s:
            c.feasible = False
            self.feedback.flag(req, "SLO can no longer be met")
        return c

    def _rebuild(self, now):
        self.num_rebuilds += 1
        if self.config.slice_reject_lost:
            for req in [r for r in self.waiting + self.running if not r.output_token_ids and ttft_lost(r, now)]:
                self.reject(req, now, "lost")
                self.old_cached.pop(req.req_id, None)
                self._members.pop(req.req_id, None)
                self.num_rejected += 1
        self.candidates.begin(self.config, self.cap_s)
        cands = [self._candidate(r, now) for r in self.running]
        cands += [self._waiting_candidate(r, now) if r.num_computed_tokens == 0 and not r.output_token_ids
                  and not (self.config.slice_feedback and r.req_id in self.feedback.boost)
                  else self._candidate(r, now) for r in self.waiting]
        cands.sort(key=attrgetter("sort_key"))
        self._adopt(select(cands, self.params, self.latency, now))


def _oracle(paper, **overrides) -> _Oracle:
    twin = make_slice(paper.copy(), **overrides)
    return _Oracle(twin.config, paper.copy())


def _arrivals(seed: int, n: int) -> list[dict]:
    """Bursts of mixed requests: real-time, non-real-time, e2e-only, SLO-less and hopeless (a TPOT no
    rate can reach), the same prompt tokens (prefix-cache hits)."""
    rng = random.Random(seed)
    specs, t = [], 0.0
    kinds = [dict(tpot=0.05, ttft=0.5, utility=100.0, cls="realtime"),
             dict(tpot=0.1, ttft=1.0, utility=1.0, cls="nrt-100"),
             dict(tpot=0.25, ttft=5.0, utility=1.0, cls="nrt-250"),
             dict(tpot=None, ttft=None, e2e=20.0, utility=1.0, cls="batch"),
             dict(tpot=None, ttft=None, utility=1.0, cls="none"),
             dict(tpot=0.01, ttft=0.3, utility=100.0, cls="too-fast")]   # infeasible from its arrival on
    for i in range(n):
        if rng.random() < 0.15:
            t += rng.expovariate(1.0)   # a gap, else the same burst
        kind = rng.choice(kinds)
        specs.append(dict(rid=f"q{i}", arrival=t, prompt=rng.choice([16, 64, 200, 700]),
                          max_tokens=rng.randint(4, 60), **kind))
    return specs


def _drive(scheds, specs, seed: int, boost_at: int | None = None) -> None:
    """Run `scheds` side by side on their own copies of `specs`, asserting equal decisions every step."""
    queues = [[make_req(**s) for s in specs] for _ in scheds]
    executors = [SimulatedExecutor(s.latency.copy(), 0.05, seed) for s in scheds]
    rng, now, step = random.Random(seed), 0.0, 0
    while any(q for q in queues) or any(s.has_unfinished() for s in scheds):
        for sched, queue in zip(scheds, queues):
            while queue and queue[0].arrival_s <= now:
                sched.add_request(queue.pop(0), now)
        if rng.random() < 0.2:   # the model moves between the arrivals and the decision (a re-profile)
            factor = rng.choice([0.5, 0.9, 1.1, 2.0])
            for sched in scheds:
                sched.latency.prefill_factor *= factor
        if step == boost_at:
            waiting = [r.req_id for r in scheds[0].waiting]
            for sched in scheds:
                for rid in waiting[:2]:
                    sched.set_knob("rate_boost", 1, rid)
        outs = [s.schedule(now) for s in scheds]
        assert outs[0].prefill == outs[1].prefill and outs[0].decode == outs[1].decode, f"step {step}"
        assert outs[0].preempted == outs[1].preempted and outs[0].finished == outs[1].finished, f"step {step}"
        results = [e.execute(o) for e, o in zip(executors, outs)]
        elapsed = results[0].elapsed_s
        if not outs[0].requests and not elapsed:
            nxt = min((q[0].arrival_s for q in queues if q), default=now + 0.05)
            results = [ModelOutput(elapsed_s=0.0) for _ in scheds]
            elapsed = max(nxt - now, 0.01)
        now += elapsed
        for sched, out, res in zip(scheds, outs, results):
            sched.update(out, res, now)
        assert scheds[0].num_violation_risks == scheds[1].num_violation_risks, f"step {step}"
        assert scheds[0].num_rejected == scheds[1].num_rejected, f"step {step}"
        step += 1
        assert step < 20_000, "no progress"


@pytest.mark.parametrize("overrides", [
    dict(slice_reject_lost=True),
    dict(slice_reject_lost=False),
    dict(slice_reject_lost=True, num_kv_blocks=160),             # preemptions by recompute
    dict(slice_reject_lost=False, slice_rank="rate", max_num_seqs=8),
    dict(slice_reject_lost=True, enable_prefix_caching=True),    # arrivals that start past token 0
    dict(slice_feedback=False),
])
@pytest.mark.parametrize("seed", [1, 2])
def test_decisions_equal_those_of_a_rebuild_that_builds_every_candidate(paper, overrides, seed):
    index = make_slice(paper.copy(), **overrides)
    index.check_invariants = True   # the index's own bookkeeping checked at every rebuild
    oracle = _oracle(paper, **overrides)
    _drive([index, oracle], _arrivals(seed, 120), seed, boost_at=5)
    assert index.num_rebuilds == oracle.num_rebuilds > 0
    assert not index._waiting.pool.members and not index._waiting.others


def test_a_burst_is_built_on_arrival_and_rebuilt_only_if_the_model_moved(paper, monkeypatch):
    built: list[str] = []
    real = CandidateBuilder.build
    monkeypatch.setattr(CandidateBuilder, "build", lambda self, req, *a, **k: built.append(req.req_id) or
                        real(self, req, *a, **k))
    sched = make_slice(paper.copy())
    for i in range(50):
        sched.add_request(make_req(f"n{i}", arrival=0.0, tpot=0.1, ttft=1.0, utility=1.0, cls="nrt"), 0.0)
    assert built == [f"n{i}" for i in range(50)] and len(sched._waiting.pool) == 50
    sched.schedule(0.0)
    assert len(built) == 50   # the decision built none of them again
    seen = [r.req_id for r in sched.waiting]
    assert seen   # some still wait, never run
    # The model moves between the next arrivals and the decision: those newcomers are built again under
    # the new model; the ones an earlier decision saw are not (as before the index: built once, kept).
    for i in range(50, 60):
        sched.add_request(make_req(f"n{i}", arrival=0.1, tpot=0.1, ttft=1.0, utility=1.0, cls="nrt"), 0.1)
    sched.latency.prefill_factor *= 1.5
    del built[:]
    sched.schedule(0.1)
    assert {f"n{i}" for i in range(50, 60)} <= set(built) and not set(built) & set(seen)


def test_a_request_back_from_preemption_before_its_first_token_keeps_its_first_candidate(paper):
    sched = make_slice(paper.copy(), max_num_batched_tokens=256)
    req = make_req("long", arrival=0.0, prompt=700, tpot=0.1, ttft=5.0, utility=1.0, cls="nrt")
    sched.add_request(req, 0.0)
    first = sched._waiting.cached["long"]
    out = sched.schedule(0.0)
    assert out.prefill == {"long": 256} and "long" not in sched._waiting.pool
    sched.update(out, ModelOutput(elapsed_s=0.1), 0.1)
    sched.latency.prefill_factor *= 2.0   # its candidate would differ if built now (work_s)
    sched.preempt_recompute(req)          # evicted with part of its prompt computed and no token out
    assert req.num_computed_tokens == 0 and sched._waiting.pool.members["long"] is first
    sched.check_invariants = True
    sched.schedule(0.1)


def _cand(rid: str, density: float, ctx: float, arrival: float = 0.0, feasible: bool = True,
          ttft: float | None = 1.0) -> Candidate:
    req = make_req(rid, arrival=arrival, ttft=ttft, utility=density, cls="x")
    return Candidate(req, 1, density, arrival + (ttft or 0.0), 1, 1, 32, ctx, feasible, math.inf, 0.1, None)


def test_pool_keeps_rank_order_totals_and_deadlines():
    pool = NewcomerPool()
    cands = [_cand(f"p{i}", density=float(i % 3), ctx=32.5 + i, arrival=0.1 * i) for i in range(9)]
    for c in reversed(cands):
        pool.add(c)
    pool.check()
    assert pool.cands == sorted(cands, key=attrgetter("sort_key"))
    assert pool.population([]) == Population.of(cands)
    pool.remove("p8")
    pool.mark_infeasible(pool.members["p5"])
    pool.check()   # of density 2 only p2 is left feasible
    assert pool.top_density() == 2.0 and pool.ctx_sum == sum(c.ctx for c in cands[:8])
    # TTFT deadlines (arrival + 1 s) passed by t = 1.35: p0 .. p3, each once.
    assert sorted(c.req.req_id for c in pool.expire(1.35)) == ["p0", "p1", "p2", "p3"]
    assert pool.expire(1.35) == []


def test_merged_walk_is_one_sort_of_both():
    pool = NewcomerPool()
    fresh = [_cand(f"f{i}", density=float(i % 4), ctx=10.0, arrival=0.05 * i) for i in range(7)]
    for i in range(11):
        pool.add(_cand(f"w{i}", density=float(i % 4), ctx=10.0, arrival=0.03 * i))
    fresh.sort(key=attrgetter("sort_key"))
    walk = list(merged(fresh, [c.sort_key for c in fresh], pool))
    assert walk == sorted(fresh + pool.cands, key=attrgetter("sort_key"))


def test_walk_stops_at_the_slot_cap_even_when_a_row_relays_the_mask(paper):
    """A faster row re-lays the spread mask out (new dicts): the slot count must follow it."""
    slow = [_cand(f"s{i}", density=9.0 - i, ctx=10.0, ttft=None) for i in range(3)]
    fast = _cand("fast", density=10.0, ctx=10.0, ttft=None)
    fast.rate = 4
    params = SelectionParams(1.0, 0.0, "spread", "skip", max_num_seqs=2, num_kv_blocks=1000, chunk_tokens=512)
    sel = select([slow[0], fast, *slow[1:]], params, paper, now=0.0)
    assert len(sel.selected) + len(sel.best_effort) == len(sel.mask.rows) == 2


def test_column_times_are_column_time_for_every_size(paper):
    lat = paper.copy()
    for factor, ctx, buckets, coef in [(1.0, 0.0, None, 0.0), (0.93, 300.5, None, 1.3e-6),
                                      (1.17, 17.5, [64, 256, 1024], 2e-6), (1.0, 4095.0, [64, 256], 2e-6)]:
        lat.decode_factor, lat.ctx_buckets, lat.ctx_iter_coef_s = factor, buckets, coef
        for first in (1, 8, 15, 16, 40):
            assert lat.column_times(first, 300, ctx) == [lat.column_time(k, ctx) for k in range(first, 301)]
