"""Embedding requests in the scheduling core (no torch): prefill-only work that ends with its vector, on
every policy and the simulated executor, with no prefix reuse (pooling needs every prompt position)."""
from __future__ import annotations

import pytest

from sliceserve.core.latency import load_profile
from sliceserve.core.policies import available_policies
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request, SamplingParams
from sliceserve.sim.executor import SimulatedExecutor
from sliceserve.slo import BUILTIN_CLASSES, SLO
from tests.core.schedhelpers import scheduler


def _embed(rid: str, n: int, arrival_s: float = 0.0) -> Request:
    cls = BUILTIN_CLASSES["embedding"]
    return Request(rid, list(range(1, n + 1)), SamplingParams(max_tokens=1), arrival_s, slo=cls.slo,
                   slo_class=cls.name, utility=cls.utility, embed=True)


def _gen(rid: str, n: int, max_tokens: int) -> Request:
    return Request(rid, list(range(1, n + 1)), SamplingParams(max_tokens=max_tokens, ignore_eos=True), 0.0,
                   slo=SLO(ttft_s=30.0, tpot_s=1.0), utility=100.0)


def _run(policy: str, reqs: list[Request], **config) -> float:
    lat = load_profile("paper-4060ti")
    core = EngineCore(scheduler(policy, lat, **config), SimulatedExecutor(lat))
    for r in reqs:
        assert core.add_request(r, 0.0)
    now = 0.0
    for _ in range(1000):
        if not core.has_unfinished():
            return now
        step = core.step(now)
        now += max(step.output.elapsed_s, 1e-3)
    raise AssertionError("requests did not finish")


def test_embedding_class_ranks_below_every_generation_class():
    emb = BUILTIN_CLASSES["embedding"]
    assert emb.slo.tpot_s is None and emb.slo.ttft_s is not None
    assert all(emb.utility < c.utility for n, c in BUILTIN_CLASSES.items() if n != "embedding")


@pytest.mark.parametrize("policy", available_policies())
def test_embed_requests_end_with_a_vector_and_no_tokens(policy):
    # A small chunk budget makes policies split prompts, some down to a last token scheduled as a decode.
    embeds = [_embed(f"e{i}", 20 + 7 * i) for i in range(4)]
    gens = [_gen(f"g{i}", 12, 5) for i in range(2)]
    _run(policy, embeds + gens, max_num_batched_tokens=16)
    for r in embeds:
        assert r.finish_reason is FinishReason.STOP and r.embedding == [] and r.output_token_ids == []
        assert r.num_computed_tokens == r.num_prompt_tokens and len(r.token_times_s) == 1
    for r in gens:
        assert r.finish_reason is FinishReason.LENGTH and len(r.output_token_ids) == 5


def test_embed_request_takes_only_its_prefill_time():
    lat = load_profile("paper-4060ti")
    req = _embed("e", 200)
    end = _run("vllm", [req])
    assert req.token_times_s[0] == pytest.approx(lat.iteration_time(0, 0.0, 200))
    assert end == pytest.approx(req.token_times_s[0])


def test_embed_requests_do_not_start_from_a_cached_prefix():
    sched = scheduler("vllm", enable_prefix_caching=True)
    lat = load_profile("paper-4060ti")
    core = EngineCore(sched, SimulatedExecutor(lat))
    first = _gen("g", 64, 1)
    core.add_request(first, 0.0)
    core.step(0.0)   # its prompt blocks are now cached
    again = _gen("g2", 64, 1)
    core.add_request(again, 1.0)
    assert again.num_computed_tokens > 0          # a generation reuses them
    emb = _embed("e", 64, 1.0)
    core.add_request(emb, 1.0)
    assert emb.num_computed_tokens == 0           # an embedding computes every position
