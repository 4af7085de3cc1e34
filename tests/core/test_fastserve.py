"""FastServe's indexed scheduler against a plain full-scan oracle, and the cost property the index exists for.

The oracle is the straightforward algorithm the policy's docstring describes (and the policy's first
version ran): every iteration, scan every request for starvation in arrival order, sort all requests by
(level, entry order), and try each in turn. The indexed scheduler must make the same decisions step by
step: same batch, same preemptions, same levels, same counters.
"""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedhelpers import make_request, scheduler
from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import load_profile
from sliceserve.core.outputs import ModelOutput
from sliceserve.core.policies.fastserve import FastServeScheduler
from sliceserve.core.scheduler import Batch
from sliceserve.request import RequestStatus


class FullScanFastServe(FastServeScheduler):
    """Oracle: decides from a full scan and a full sort each iteration (never reads the queue index)."""

    def plan(self, now: float) -> Batch:
        limit = self.config.fastserve_starvation_s
        for s in list(self._state.values()):       # arrival order
            if now - s.last_run_s >= limit:
                s.last_run_s = now
                if s.level > 0 or s.used_s > 0:
                    self._enter(s, 0)
                    self.num_starvation_promotions += 1
                self._track(s)
        batch = Batch()
        chosen: set[str] = set()
        budget = self.config.max_num_batched_tokens
        for s in sorted(self._state.values(), key=lambda x: x.prio):
            if len(chosen) >= self.config.max_num_seqs or budget <= 0:
                break
            req = s.req
            computed = req.num_computed_tokens
            n = min(req.num_tokens - computed, budget)
            status = req.status
            if not self.kv.allocate(req.req_id, computed + n):
                if status is RequestStatus.WAITING or not self._full_scan_evict(s, computed + n, chosen):
                    continue
            if status is RequestStatus.WAITING:
                self.start(req)
                self._moved.append(s)
            elif status is RequestStatus.PAUSED:
                self.resume(req)
            chosen.add(req.req_id)
            if req.num_tokens - computed > 1:
                batch.prefill[req.req_id] = n
            else:
                batch.decode.append(req.req_id)
            budget -= n
        batch.num_tokens = self.config.max_num_batched_tokens - budget
        for req in self.running:
            if req.status is RequestStatus.RUNNING and req.req_id not in chosen:
                self.pause(req)
        self._reindex(self._moved)  # keeps the shared bookkeeping valid; decisions above never read it
        return batch

    def _full_scan_evict(self, s, num_tokens: int, chosen: set[str]) -> bool:
        kv, req, states = self.kv, s.req, self._state
        need = kv.blocks_needed(req.req_id, num_tokens)
        victims = sorted((r for r in self.running if r.req_id not in chosen and r is not req
                          and states[r.req_id].prio > s.prio), key=lambda r: states[r.req_id].prio, reverse=True)
        if need > kv.num_free_blocks + sum(kv.num_blocks_held(v.req_id) for v in victims):
            return False
        for victim in victims:
            self.preempt_recompute(victim, front=False)
            self._moved.append(states[victim.req_id])
            if need <= kv.num_free_blocks:
                break
        return kv.allocate(req.req_id, num_tokens)


def _pair(**config):
    fast = scheduler("fastserve", **config)
    oracle = FullScanFastServe(SchedulerConfig(policy="fastserve", **config), load_profile("paper-4060ti"))
    oracle.check_invariants = True
    return fast, oracle


def _run_side_by_side(seed: int, num_requests: int, clock_jitter: bool, **config) -> FastServeScheduler:
    """Identical arrivals, iteration times and aborts for both; asserts identical decisions every step."""
    rng = random.Random(seed)
    fast, oracle = _pair(**config)
    arrivals, t = [], 0.0
    for i in range(num_requests):
        t += rng.expovariate(40.0)
        arrivals.append((t, f"r{i}", rng.randint(1, 60), rng.randint(1, 40)))
    now, steps = 0.0, 0
    while arrivals or fast.has_unfinished():
        while arrivals and arrivals[0][0] <= now:
            t, rid, prompt, out = arrivals.pop(0)
            for s in (fast, oracle):
                s.add_request(make_request(rid, prompt, out, arrival_s=t), t)
        if steps % 37 == 36 and fast.requests:  # occasional abort, the same for both
            victim = sorted(fast.requests)[rng.randrange(len(fast.requests))]
            fast.abort(victim, now)
            oracle.abort(victim, now)
        outs = [s.schedule(now) for s in (fast, oracle)]
        assert (outs[0].prefill, outs[0].decode, outs[0].preempted) == (
            outs[1].prefill, outs[1].decode, outs[1].preempted), f"step {steps} differs"
        elapsed = rng.uniform(0.002, 0.08)
        if not outs[0].requests:
            if not arrivals:
                # Nothing runs and nothing will arrive: the last request was aborted, or (only with
                # prefix caching, where waiting requests hold shared prompt blocks that no one may
                # evict) both schedulers are stuck alike.
                assert not fast.has_unfinished() or config.get("enable_prefix_caching"), "stuck"
                break
            now = max(now + elapsed, arrivals[0][0])
            continue
        sampled = {rid: 7 for rid in outs[0].requests if outs[0].samples(rid)}
        for s, out in zip((fast, oracle), outs):
            s.update(out, ModelOutput(sampled=dict(sampled), elapsed_s=elapsed), now + elapsed)
        assert {r: fast.level_of(r) for r in fast.requests} == {r: oracle.level_of(r) for r in oracle.requests}
        # A clock that sometimes steps back (the wall clock of a caller, hand-driven tests) must not
        # break the starvation guard's oldest-first order.
        now += elapsed - (rng.uniform(0, 2 * elapsed) if clock_jitter and rng.random() < 0.1 else 0.0)
        steps += 1
        assert steps < 20_000
    assert (fast.num_demotions, fast.num_starvation_promotions, fast.num_preemptions) == (
        oracle.num_demotions, oracle.num_starvation_promotions, oracle.num_preemptions)
    return fast


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), num_kv_blocks=st.integers(8, 60), block_size=st.sampled_from([2, 4, 16]),
       max_num_seqs=st.integers(1, 8), max_num_batched_tokens=st.integers(8, 128),
       starvation_s=st.sampled_from([0.05, 0.3, 3.0]), clock_jitter=st.booleans(),
       prefix_caching=st.booleans())
def test_indexed_scheduler_decides_like_the_full_scan(seed, num_kv_blocks, block_size, max_num_seqs,
                                                      max_num_batched_tokens, starvation_s, clock_jitter,
                                                      prefix_caching):
    _run_side_by_side(seed, 40, clock_jitter, num_kv_blocks=num_kv_blocks, block_size=block_size,
                      max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                      max_model_len=4096, fastserve_q0_s=0.01, fastserve_num_queues=4,
                      fastserve_starvation_s=starvation_s, enable_prefix_caching=prefix_caching)


def test_deep_overload_matches_the_full_scan_and_exercises_every_path():
    fast = _run_side_by_side(7, 300, False, num_kv_blocks=40, block_size=4, max_num_seqs=6,
                             max_num_batched_tokens=64, max_model_len=4096, fastserve_q0_s=0.01,
                             fastserve_num_queues=4, fastserve_starvation_s=0.2)
    # The comparison above only means something if demotion, the guard and eviction all happened.
    assert fast.num_demotions > 0 and fast.num_starvation_promotions > 0 and fast.num_preemptions > 0


def test_plan_tries_only_waiting_requests_that_fit_the_free_kv():
    # A 256-token holder leaves one block free; 2,000 waiting requests need 4 blocks each, 50 need one.
    s = scheduler("fastserve", fastserve_q0_s=10.0, num_kv_blocks=65, block_size=4, max_num_seqs=8,
                  max_num_batched_tokens=256)
    s.add_request(make_request("big", 256, 4), 0.0)
    out = s.schedule(0.0)
    s.update(out, ModelOutput(sampled={"big": 7}, elapsed_s=0.1), 0.1)
    assert s.kv.num_free_blocks == 1
    for i in range(2000):
        s.add_request(make_request(f"w{i}", 16, 4), 0.1)
    for i in range(50):
        s.add_request(make_request(f"small{i}", 3, 1), 0.1)
    calls: list[str] = []
    allocate = s.kv.allocate
    s.kv.allocate = lambda rid, n: calls.append(rid) or allocate(rid, n)
    out = s.schedule(0.1)
    # "big" (first in the top queue) takes the last block for its next token; after that no waiting
    # request can fit. Of the 2,050 waiting, at most the one that fitted before ("small0") is tried.
    assert list(out.requests) == ["big"] and s.kv.num_free_blocks == 0
    assert calls[0] == "big" and calls[1:] in ([], ["small0"])
    s.update(out, ModelOutput(sampled={"big": 7}, elapsed_s=0.1), 0.2)
    s.abort("big", 0.2)   # 65 blocks free: the first 8 waiting, in entry order, fill the batch
    calls.clear()
    out = s.schedule(0.2)
    assert list(out.requests) == [f"w{i}" for i in range(8)] and calls == list(out.requests)
