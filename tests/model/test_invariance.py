"""A request's tokens do not depend on what it shares an iteration with, on chunking, or on preemption."""
from __future__ import annotations

from sliceserve.request import SamplingParams
from tests.model.helpers import run_engine

TEXTS = ["Once upon a time there was a little robot who", "Edge devices serve language models",
         "def fibonacci(n):", "Why is the sky blue? Because", "One two three four five six seven eight nine"]


def _prompts(loaded):
    return [loaded.tokenizer.encode(t) for t in TEXTS]


def _alone(loaded, prompts, params):
    return [run_engine(loaded, [p], params)[0][0].output_token_ids for p in prompts]


def test_batched_and_chunked_equal_alone(tiny_llama):
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    prompts = _prompts(tiny_llama)
    alone = _alone(tiny_llama, prompts, params)
    batched, _ = run_engine(tiny_llama, prompts, params)
    assert [r.output_token_ids for r in batched] == alone
    # A 5-token budget splits every prompt into chunks that share iterations with other requests' decodes.
    chunked, engine = run_engine(tiny_llama, prompts, params, max_num_batched_tokens=5, stagger=3)
    assert [r.output_token_ids for r in chunked] == alone
    assert engine.num_iterations > sum(len(p) for p in prompts) // 5


def test_preemption_and_recompute_equal_alone(tiny_llama):
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    prompts = _prompts(tiny_llama)
    alone = _alone(tiny_llama, prompts, params)
    # 8 blocks of 16 tokens cannot hold five ~35-token requests: the newest are preempted and recomputed.
    reqs, engine = run_engine(tiny_llama, prompts, params, num_kv_blocks=8, max_num_batched_tokens=16)
    assert engine.scheduler.num_preemptions > 0
    assert [r.output_token_ids for r in reqs] == alone


def test_seeded_sampling_survives_batching_and_preemption(tiny_llama):
    params = [SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=100 + i, ignore_eos=True)
              for i in range(len(TEXTS))]
    prompts = _prompts(tiny_llama)
    alone = [run_engine(tiny_llama, [p], [sp])[0][0].output_token_ids for p, sp in zip(prompts, params)]
    reqs, engine = run_engine(tiny_llama, prompts, params, num_kv_blocks=7, max_num_batched_tokens=8)
    assert engine.scheduler.num_preemptions > 0
    assert [r.output_token_ids for r in reqs] == alone


def test_decode_attention_groups_do_not_change_tokens(tiny_llama):
    """Decoding sequences split into several attention calls (one per context length here) or kept in one
    padded, masked call: the same tokens as alone."""
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    prompts = _prompts(tiny_llama)
    alone = _alone(tiny_llama, prompts, params)
    runner = tiny_llama.runner
    saved = runner.decode_group_overhead_tokens
    try:
        for overhead in (0.0, float("inf")):
            runner.decode_group_overhead_tokens = overhead
            batched, _ = run_engine(tiny_llama, prompts, params, stagger=2)
            assert [r.output_token_ids for r in batched] == alone, overhead
    finally:
        runner.decode_group_overhead_tokens = saved
