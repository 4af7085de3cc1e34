"""Prefix cache: refcounted shared blocks keyed by an exact hash chain, scheduler hook, and greedy outputs
identical with and without it on the real model runner (tiny random Llama)."""
from __future__ import annotations

import pytest

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.core.prefix_cache import PrefixCachingAllocator
from sliceserve.core.outputs import ModelOutput
from sliceserve.request import Request, SamplingParams


def _computed(kv: PrefixCachingAllocator, rid: str, tokens: list[int]) -> None:
    """A request that computed all of `tokens` and registered its full blocks."""
    assert kv.allocate(rid, len(tokens))
    kv.cache_prompt(rid, tokens, len(tokens))


def test_shared_prefix_hits_whole_blocks_and_refcounts():
    kv = PrefixCachingAllocator(num_blocks=8, block_size=4)
    a = list(range(10))                       # blocks [0-3] [4-7], partial [8, 9]
    _computed(kv, "a", a)
    b = a[:8] + [99, 98, 97]
    assert kv.acquire_prefix("b", b, len(b) - 1) == 8
    assert kv.block_table("b") == kv.block_table("a")[:2]
    kv.free("a")
    # a's shared blocks are still held by b; its private partial block went back to the free list.
    assert kv.num_free_blocks == 8 - 2
    kv.free("b")
    assert kv.num_free_blocks == 8 and kv.num_cached_blocks == 2     # cached, evictable
    assert kv.acquire_prefix("c", a, len(a) - 1) == 8                # survives both requests
    assert kv.hit_rate == pytest.approx(16 / (10 + 9))


def test_same_block_after_a_different_prefix_does_not_hit():
    kv = PrefixCachingAllocator(num_blocks=8, block_size=4)
    _computed(kv, "a", [1, 2, 3, 4, 5, 6, 7, 8, 0])
    # Second block equal to a's second block, first block different: K/V differ, so no reuse at all.
    assert kv.acquire_prefix("b", [9, 9, 9, 9, 5, 6, 7, 8, 0], 8) == 0
    assert kv.block_table("b") == []


def test_at_least_one_token_is_left_to_compute():
    kv = PrefixCachingAllocator(num_blocks=8, block_size=4)
    prompt = list(range(8))                  # exactly two full blocks
    _computed(kv, "a", prompt)
    assert kv.acquire_prefix("b", prompt, len(prompt) - 1) == 4   # cap 7 tokens -> one whole block


def test_eviction_only_when_free_list_is_empty_lru_first():
    kv = PrefixCachingAllocator(num_blocks=4, block_size=2)
    _computed(kv, "a", [1, 1])
    _computed(kv, "b", [2, 2])
    kv.free("a")
    kv.free("b")
    assert kv.allocate("c", 4)               # two free blocks: nothing evicted
    assert kv.num_cached_blocks == 2
    assert kv.allocate("d", 2)               # needs one more: evicts a's block (least recently freed)
    assert kv.num_cached_blocks == 1
    assert kv.acquire_prefix("e", [1, 1, 5], 2) == 0
    assert kv.acquire_prefix("f", [2, 2, 5], 2) == 2
    assert not kv.allocate("g", 4)           # everything held: all or nothing
    assert kv.num_free_blocks == 0


def _req(rid: str, prompt: list[int]) -> Request:
    return Request(rid, prompt, SamplingParams(max_tokens=2, ignore_eos=True), arrival_s=0.0)


def test_scheduler_admission_starts_at_cached_prefix_and_only_when_enabled():
    lat = load_profile("paper-4060ti")
    system = list(range(100, 164))           # 64 tokens = 4 blocks of 16
    for enabled, expected in ((True, 64), (False, 0)):
        cfg = SchedulerConfig(policy="vllm", num_kv_blocks=64, enable_prefix_caching=enabled)
        sched = make_scheduler("vllm", cfg, lat.copy())
        first = _req("a", system + [1, 2, 3])
        sched.add_request(first, 0.0)
        out = sched.schedule(0.0)
        assert out.prefill == {"a": 67}
        sched.update(out, ModelOutput(sampled={"a": 7}, elapsed_s=0.01), 0.01)
        second = _req("b", system + [4, 5])
        sched.add_request(second, 0.02)
        assert second.num_computed_tokens == expected
        out = sched.schedule(0.02)
        assert out.prefill["b"] == 66 - expected


@pytest.fixture(scope="module")
def tiny_engine_pair(tiny_llama_dir):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from sliceserve.engine.llm import LLM
    from sliceserve.model.loader import load_model

    # float32: the int8 default quantises each call's activations with one scale, so a cached prefix (a
    # shorter prefill chunk) may move the last bits of the logits; equality is a property of the reference path.
    loaded = load_model(str(tiny_llama_dir), dtype="float32", num_threads=1,
                        kv_cache_memory_bytes=256 * 2 * 2 * 16 * 2 * 16 * 4)
    on = LLM(loaded, policy="vllm", profile="paper-4060ti", enable_prefix_caching=True)
    off = LLM(loaded, policy="vllm", profile="paper-4060ti", enable_prefix_caching=False)
    return on, off


def test_greedy_outputs_identical_with_and_without_prefix_cache(tiny_engine_pair):
    from sliceserve.engine.llm import LLM

    # Both engines share one loaded model, hence one physical KV cache: `on` is used before `off` only.
    on, off = tiny_engine_pair
    system = "You are a terse assistant. Answer with one word and never explain anything at all. " * 3
    prompts = [system + q for q in ("Hello there", "The capital of France is", "Count: one two three")]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    warm = on.generate(prompts[0], params)           # fills the cache with the system prompt's blocks
    assert on.scheduler.kv.hit_tokens == 0
    cached = [o.token_ids for o in on.generate(prompts, params)]
    uncached = [o.token_ids for o in off.generate(prompts, params)]
    assert warm[0].token_ids == uncached[0]
    assert cached == uncached
    kv = on.scheduler.kv
    n_system = len(on.encode(system))
    assert kv.hit_tokens >= 3 * (n_system // 16) * 16 and kv.hit_rate > 0.5
    # One after another, each reusing the previous request's blocks, with prefill chunks of 5 tokens.
    chunked = LLM(on.model, policy="vllm", profile="paper-4060ti", enable_prefix_caching=True,
                  max_num_batched_tokens=5)
    assert [chunked.generate(p, params)[0].token_ids for p in prompts] == uncached
    assert chunked.scheduler.kv.hit_tokens > 0
