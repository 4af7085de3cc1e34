"""Liveness with a token budget below SLICE's smallest prompt chunk (`fill.MIN_CHUNK`, 16 tokens).

Found by tests/core/test_policy_properties.py (run alone, hypothesis drew `max_num_batched_tokens` = 12):
a member whose prompt is longer than the whole budget could only ever get a 12-token chunk, which the
fill refused as "not worth an iteration's fixed prefill cost", and while a member's prompt is blocked best
effort waits too, so the device idled forever with three requests queued. Why only alone: Hypothesis (6.170) also draws
constants found in the source of the local modules already imported, so the examples of a derandomized test
depend on what else was collected; with server/CLI test modules collected beside it, the same test at the
same commit passed (and alone it ran until the 240 s limit)."""
from __future__ import annotations

from sliceserve.core.latency import load_profile
from sliceserve.engine.core import EngineCore
from sliceserve.request import RequestStatus
from sliceserve.sim import SimulatedExecutor
from tests.slice.conftest import make_req, make_slice


def _run(max_num_batched_tokens: int, max_steps: int = 2000) -> tuple[list, int]:
    sched = make_slice(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=2, num_kv_blocks=20,
                       block_size=4)
    core = EngineCore(sched, SimulatedExecutor(load_profile("paper-4060ti"), noise=0.0, seed=1))
    reqs = [make_req("rt", prompt=37, max_tokens=24, tpot=0.05, ttft=None),
            make_req("be1", prompt=28, max_tokens=26, tpot=None, ttft=None, utility=1.0, cls="best"),
            make_req("be2", prompt=28, max_tokens=26, tpot=None, ttft=None, utility=1.0, cls="best")]
    for r in reqs:
        core.add_request(r, 0.0)
    now, steps = 0.0, 0
    while core.has_unfinished() and steps < max_steps:
        step = core.step(now)
        now = step.end_s if not step.sched.is_empty else now + 0.01
        steps += 1
    return reqs, steps


def test_prompt_longer_than_a_budget_below_the_min_chunk_still_goes_in():
    reqs, steps = _run(max_num_batched_tokens=12)
    assert all(r.status is RequestStatus.FINISHED for r in reqs), [(r.req_id, r.status) for r in reqs]
    assert [r.num_output_tokens for r in reqs] == [24, 26, 26]
    # Each prompt goes in 12-token chunks (37 -> 4 chunks, 28 -> 3), then decodes: no idle spin.
    assert steps < 24 + 26 + 26 + 4 + 3 + 3


def test_default_budget_unchanged_chunking():
    reqs, _ = _run(max_num_batched_tokens=512)
    assert all(r.status is RequestStatus.FINISHED for r in reqs)
