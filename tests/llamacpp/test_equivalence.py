"""Greedy tokens of the executor equal llama.cpp's own generation, and do not depend on batching, chunking or
eviction: driven through EngineCore with a real scheduler (tests/model/helpers.run_engine)."""
from __future__ import annotations

from sliceserve.request import SamplingParams
from tests.model.helpers import run_engine

TEXTS = ["Once upon a time there was a little robot who", "Edge devices serve language models",
         "def fibonacci(n):", "Why is the sky blue? Because", "One two three four five six seven eight nine"]
N = 24


def _prompts(loaded) -> list[list[int]]:
    return [loaded.tokenizer.encode(t) for t in TEXTS]


def _reference_greedy(reference, prompt: list[int], n: int) -> list[int]:
    out: list[int] = []
    for token in reference.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n:
            return out
    return out


def test_greedy_equals_llama_cpp_generate(lcpp, reference):
    params = SamplingParams(max_tokens=N, ignore_eos=True)
    for prompt in _prompts(lcpp):
        reqs, _ = run_engine(lcpp, [prompt], params)
        assert reqs[0].output_token_ids == _reference_greedy(reference, prompt, N)


def test_text_equals_create_completion(lcpp, reference):
    prompt = _prompts(lcpp)[0]
    reqs, _ = run_engine(lcpp, [prompt], SamplingParams(max_tokens=16, ignore_eos=True))
    done = reference.create_completion(prompt, max_tokens=16, temperature=0.0)
    assert done["choices"][0]["text"] == reference.detokenize(reqs[0].output_token_ids).decode("utf-8", "replace")


def test_batched_chunked_and_evicted_equal_alone(lcpp):
    params = SamplingParams(max_tokens=N, ignore_eos=True)
    prompts = _prompts(lcpp)
    alone = [run_engine(lcpp, [p], params)[0][0].output_token_ids for p in prompts]
    batched, _ = run_engine(lcpp, prompts, params)
    assert [r.output_token_ids for r in batched] == alone
    # A 5-token budget splits prompts into chunks that share iterations with other requests' decodes.
    chunked, engine = run_engine(lcpp, prompts, params, max_num_batched_tokens=5, stagger=3)
    assert [r.output_token_ids for r in chunked] == alone
    assert engine.num_iterations > sum(len(p) for p in prompts) // 5
    # 8 blocks of 16 tokens cannot hold five growing requests: the vLLM policy preempts (recompute).
    evicted, engine = run_engine(lcpp, prompts, params, num_kv_blocks=8)
    assert sum(r.num_preemptions for r in evicted) > 0
    assert [r.output_token_ids for r in evicted] == alone
    engine.step(0.0)   # the next (empty) iteration carries the last finished ids to the executor
    assert len(lcpp.runner.seqs) == 0   # every sequence id was given back


def test_seeded_sampling_same_alone_and_batched(lcpp):
    params = SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=7, ignore_eos=True)
    prompts = _prompts(lcpp)[:3]
    alone = [run_engine(lcpp, [p], params)[0][0].output_token_ids for p in prompts]
    batched, _ = run_engine(lcpp, prompts, params, max_num_batched_tokens=7)
    assert [r.output_token_ids for r in batched] == alone
