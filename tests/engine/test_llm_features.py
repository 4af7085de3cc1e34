"""The offline LLM's guided decoding, logprobs, prompt logprobs and n, on a tiny random Llama (its
output is noise, so only the grammar can make it valid JSON), plus the constrained-bench helper."""
from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llguidance")

from sliceserve import LLM, SamplingParams, StructuredOutputs  # noqa: E402

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maximum": 99}},
          "required": ["ok", "n"]}


@pytest.fixture(scope="module")
def llm(tiny_loaded):
    return LLM(tiny_loaded, policy="vllm")


def test_guided_json_regex_choice_on_noise_model(llm):
    free = llm.generate("x", SamplingParams(max_tokens=20, ignore_eos=True))[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.text)          # unconstrained: noise
    out = llm.generate(["a", "b"], SamplingParams(max_tokens=40, temperature=0.9, seed=1,
                                                 structured_outputs=StructuredOutputs(json=SCHEMA)))
    for o in out:
        obj = json.loads(o.text)
        assert set(obj) == {"ok", "n"} and isinstance(obj["ok"], bool) and obj["n"] <= 99
        assert o.finish_reason == "stop"    # the grammar's end ends the request
    rx = llm.generate("y", SamplingParams(max_tokens=10, structured_outputs=StructuredOutputs(regex="[0-9]{3}-[a-z]{2}")))
    assert re.fullmatch("[0-9]{3}-[a-z]{2}", rx[0].text)
    ch = llm.generate("z", SamplingParams(max_tokens=10, temperature=1.0, n=4, seed=2,
                                          structured_outputs=StructuredOutputs(choice=("alpha", "beta"))))
    assert {s.text for s in ch[0].outputs} <= {"alpha", "beta"} and len(ch[0].outputs) == 4


def test_grammar_ends_request_even_with_ignore_eos(llm):
    o = llm.generate("q", SamplingParams(max_tokens=30, ignore_eos=True,
                                         structured_outputs=StructuredOutputs(choice=("done",))))[0]
    assert o.text == "done" and o.finish_reason == "stop"


def test_bad_grammar_raises_before_running(llm):
    from sliceserve.model.guided import GrammarError

    with pytest.raises(GrammarError):
        llm.generate("q", SamplingParams(structured_outputs=StructuredOutputs(regex="(")))
    with pytest.raises(GrammarError):
        StructuredOutputs(json={"type": "object"}, regex="a")


def test_logprobs_prompt_logprobs_and_n(llm):
    params = SamplingParams(max_tokens=4, ignore_eos=True, logprobs=3, prompt_logprobs=2, n=3, temperature=1.0,
                            seed=11)
    out = llm.generate([[5, 6, 7, 8, 9]], params)[0]
    assert len(out.outputs) == 3 and len({tuple(s.token_ids) for s in out.outputs}) > 1
    for s in out.outputs:
        assert len(s.logprobs) == 4
        for token, (lp, alts) in zip(s.token_ids, s.logprobs):
            assert lp <= 0 and len(alts) == 3 and alts[0][1] >= alts[-1][1]
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == 5
    # Prompt logprobs equal the logprobs the model gives when it generates that token greedily.
    greedy = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=1, logprobs=0))[0]
    again = llm.generate([[5, 6, 7, greedy.token_ids[0]]], SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
    assert again.prompt_logprobs[3][0] == pytest.approx(greedy.logprobs[0][0], abs=1e-4)


def test_constrain_picks_a_seeded_fraction(llm):
    from sliceserve.bench.constrained import constrain
    from sliceserve.request import Request

    reqs = [Request(f"r{i}", [1, 2], SamplingParams(), 0.0) for i in range(200)]
    n = constrain(reqs, 0.3, 0, llm.tokenizer)
    assert n == sum(r.sampling_params.structured_outputs is not None for r in reqs) and 40 < n < 80
    out = llm.engine and llm.generate("x", SamplingParams(max_tokens=40, ignore_eos=True,
                                                          structured_outputs=reqs[[r.sampling_params.structured_outputs
                                                                                   is not None for r in reqs].index(True)]
                                                          .sampling_params.structured_outputs))[0]
    assert len(out.token_ids) == 40 and out.text.startswith('{"id": ')     # never ends: forced lengths hold
