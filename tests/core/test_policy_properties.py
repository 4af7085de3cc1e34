"""Property tests over random small workloads, for every registered policy (colleagues' included).

Each example drives a policy through EngineCore with a simulated executor whose tokens are random (so
stop tokens end some requests early) and random aborts, checking invariants after every step.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import load_profile
from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.core.policies import available_policies, make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request, RequestStatus, SamplingParams
from sliceserve.sim import SimulatedExecutor
from sliceserve.slo import SLO

STOP = 3
SLOS = [SLO(), SLO(ttft_s=2.0, tpot_s=0.3), SLO(tpot_s=0.05), SLO(e2e_s=20.0), SLO(ttft_s=0.05)]
MAX_STEPS = 5000


class RandomTokens:
    """Simulated timing, random tokens (seeded): STOP ends requests that do not ignore it."""

    def __init__(self, seed: int) -> None:
        self.inner = SimulatedExecutor(load_profile("paper-4060ti"), noise=0.1, seed=seed)
        self.rng = random.Random(seed)

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        out = self.inner.execute(sched)
        out.sampled = {rid: self.rng.randrange(2, 12) for rid in out.sampled}
        return out


workloads = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16),
    "num_kv_blocks": st.integers(6, 40),
    "block_size": st.sampled_from([2, 4, 16]),
    "max_num_seqs": st.integers(1, 6),
    "max_num_batched_tokens": st.integers(8, 96),
    "requests": st.lists(st.tuples(
        st.floats(0.0, 0.5),            # gap to the previous arrival (s)
        st.integers(1, 40),             # prompt tokens
        st.integers(1, 30),             # max_tokens
        st.integers(0, len(SLOS) - 1),  # SLO
        st.booleans(),                  # ignore the stop token
        st.integers(0, 2),              # priority
    ), min_size=1, max_size=12),
    "abort_every": st.integers(0, 25),  # abort a random request every N steps (0: never)
})


def _check_step(sched, out: SchedulerOutput, seen_tokens: dict[str, int]) -> None:
    kv = sched.kv
    assert kv.num_used_blocks <= kv.num_blocks
    tables = [kv.block_table(rid) for rid in list(sched.requests)]
    ids = [b for t in tables for b in t]
    assert len(ids) == len(set(ids)) == kv.num_used_blocks, "KV blocks leaked or shared"
    for rid, req in out.requests.items():
        assert req.num_computed_tokens <= req.num_tokens
        if rid in sched.requests:  # still unfinished: its KV covers what it computed
            assert kv.num_blocks_held(rid) * kv.block_size >= req.num_computed_tokens
    for rid, req in sched.requests.items():
        assert req.num_output_tokens <= req.max_tokens
        assert req.num_output_tokens >= seen_tokens.get(rid, 0), f"{rid} lost tokens"
        seen_tokens[rid] = req.num_output_tokens
        if req.status is RequestStatus.WAITING:
            assert kv.num_blocks_held(rid) == 0


def _run(policy: str, w: dict) -> tuple[list[Request], object]:
    config = SchedulerConfig(policy=policy, num_kv_blocks=w["num_kv_blocks"], block_size=w["block_size"],
                             max_num_seqs=w["max_num_seqs"], max_num_batched_tokens=w["max_num_batched_tokens"],
                             max_model_len=4096)
    sched = make_scheduler(policy, config, load_profile("paper-4060ti"))
    sched.check_invariants = True
    core = EngineCore(sched, RandomTokens(w["seed"]))
    rng = random.Random(w["seed"])
    arrivals, t = [], 0.0
    for i, (gap, plen, max_tokens, slo, ignore, prio) in enumerate(w["requests"]):
        t += gap
        arrivals.append(Request(f"r{i}", [1] * plen, SamplingParams(max_tokens=max_tokens, ignore_eos=ignore,
                                stop_token_ids=() if ignore else (STOP,)), arrival_s=t, slo=SLOS[slo],
                                priority=prio))
    pending = list(arrivals)
    seen: dict[str, int] = {}
    now, steps = 0.0, 0
    while pending or core.has_unfinished():
        while pending and pending[0].arrival_s <= now:
            core.add_request(pending.pop(0), now)
        steps += 1
        assert steps < MAX_STEPS, f"{policy} made no progress"
        if w["abort_every"] and steps % w["abort_every"] == 0 and sched.requests:
            core.abort(rng.choice(sorted(sched.requests)), now)
        if not core.has_unfinished():
            if pending:
                now = pending[0].arrival_s
            continue
        step = core.step(now)
        _check_step(sched, step.sched, seen)
        if step.sched.is_empty:
            # Idle with work queued: only acceptable while more arrivals (or time) may unblock it.
            now = pending[0].arrival_s if pending else now + 0.01
        else:
            now = step.end_s
    return arrivals, sched


@pytest.mark.parametrize("policy", available_policies())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(w=workloads)
def test_policy_invariants(policy, w):
    arrivals, sched = _run(policy, w)
    for req in arrivals:
        assert req.status is RequestStatus.FINISHED, f"{req.req_id} lost ({req.status})"
        assert req.finish_reason in (FinishReason.STOP, FinishReason.LENGTH, FinishReason.REJECTED,
                                     FinishReason.ABORT), req.finish_reason
        assert req.num_output_tokens <= req.max_tokens
        if req.finish_reason is FinishReason.LENGTH:
            assert req.num_output_tokens == req.max_tokens
        if req.finish_reason is FinishReason.STOP:
            assert req.output_token_ids[-1] == STOP
    assert not sched.requests and sched.kv.num_used_blocks == 0
    if policy == "orca":
        assert sched.num_preemptions == 0
