"""LLM.embed on a tiny random Llama: prefill-only requests through the scheduler whose vectors equal the
L2-normalised mean of transformers' own last hidden states, alone, batched, chunked, beside generation, and
again on a repeated prompt (the prefix cache must not hide positions from the pooling)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sliceserve.engine.llm import LLM  # noqa: E402
from sliceserve.engine.wallclock import WallClockDriver  # noqa: E402
from sliceserve.request import SamplingParams  # noqa: E402

PROMPTS = ["Hello there", "The capital of France is", "One two three four five six seven eight nine ten"]


@pytest.fixture(scope="module")
def hf_vectors(tiny_llama_dir, tiny_loaded):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    out = []
    for p in PROMPTS:
        ids = tiny_loaded.tokenizer.encode(p)
        with torch.no_grad():
            hidden = hf.model(torch.tensor([ids])).last_hidden_state[0]
        out.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    return out


def _close(vectors, expected) -> None:
    assert len(vectors) == len(expected)
    for v, e in zip(vectors, expected):
        assert v is not None and len(v) == e.shape[0]
        torch.testing.assert_close(torch.tensor(v), e, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("policy, chunk", [("slice", 512), ("vllm", 3), ("sarathi", 4)])
def test_embed_equals_transformers_mean_pooling(tiny_loaded, hf_vectors, policy, chunk):
    llm = LLM(tiny_loaded, policy=policy, max_num_batched_tokens=chunk)
    outs = llm.embed(PROMPTS)
    assert [o.finish_reason for o in outs] == ["stop"] * 3 and all(o.error is None for o in outs)
    _close([o.embedding for o in outs], hf_vectors)
    for o in outs:   # one result, at the end of the prefill: its latency is its TTFT
        assert 0 < o.timings.ttft_s == o.timings.e2e_s and o.timings.tpot_s is None
    alone = [llm.embed(p)[0].embedding for p in PROMPTS]
    _close(alone, hf_vectors)
    # Same prompt again: its blocks are in the prefix cache now, but pooling needs every position.
    _close([llm.embed(PROMPTS[2])[0].embedding], hf_vectors[2:])
    _close([llm.embed(tiny_loaded.tokenizer.encode(PROMPTS[1]))[0].embedding], hf_vectors[1:2])


def test_embeddings_and_generation_share_iterations(tiny_loaded, hf_vectors):
    llm = LLM(tiny_loaded, policy="vllm", max_num_batched_tokens=5)
    expected_text = [o.token_ids for o in llm.generate(PROMPTS, SamplingParams(max_tokens=6, ignore_eos=True))]
    gen = llm.make_requests(PROMPTS, SamplingParams(max_tokens=6, ignore_eos=True))
    emb = llm.make_requests(PROMPTS, SamplingParams(max_tokens=1), slo_classes="embedding")
    for r in emb:
        r.embed = True
    WallClockDriver(llm.engine).run([x for pair in zip(gen, emb) for x in pair])
    assert [r.output_token_ids for r in gen] == expected_text
    assert all(r.output_token_ids == [] and r.utility == 0.5 and r.slo_class == "embedding" for r in emb)
    _close([r.embedding for r in emb], hf_vectors)
