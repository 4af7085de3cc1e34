"""LLM.generate on a tiny random Llama: results per prompt, finish reasons, timings, and greedy output equal
to transformers' own generate, whether prompts run together, alone, or in small prefill chunks."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sliceserve.engine.llm import LLM  # noqa: E402
from sliceserve.request import SamplingParams  # noqa: E402
from sliceserve.slo import SLO  # noqa: E402

PROMPTS = ["Hello there", "The capital of France is", "One two three four five six seven"]


@pytest.fixture(scope="module")
def llm(tiny_loaded, policy):
    return LLM(tiny_loaded, policy=policy)


def _hf_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def test_generate_returns_one_result_per_prompt_with_reasons_and_timings(llm):
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=6, ignore_eos=True))
    assert [o.prompt for o in outs] == PROMPTS
    for o in outs:
        assert o.finish_reason == "length" and len(o.token_ids) == 6 and o.error is None
        assert o.text == llm.tokenizer.decode(o.token_ids, skip_special_tokens=True)
        t = o.timings
        assert 0 < t.ttft_s <= t.e2e_s and t.tpot_s > 0
        assert t.e2e_s == pytest.approx(t.ttft_s + 5 * t.tpot_s)
        assert t.met  # no SLO given: nothing to miss


def test_impossible_slo_is_reported_missed(llm, policy):
    outs = llm.generate(["Hello there"], SamplingParams(max_tokens=4, ignore_eos=True), slos=SLO(tpot_s=1e-9))
    # SLICE refuses a stream whose TPOT is lost (`slice_drop_lost`, default reject); the others serve it out.
    assert outs[0].finish_reason == ("rejected" if policy == "slice" else "length")
    assert outs[0].timings.met is False


def test_slice_without_drop_lost_serves_an_impossible_slo_out(tiny_loaded):
    llm = LLM(tiny_loaded, policy="slice", slice_drop_lost="off")
    outs = llm.generate(["Hello there"], SamplingParams(max_tokens=4, ignore_eos=True), slos=SLO(tpot_s=1e-9))
    assert outs[0].finish_reason == "length" and len(outs[0].token_ids) == 4 and outs[0].timings.met is False


def test_greedy_matches_transformers_alone_batched_and_chunked(llm, tiny_llama_dir, tiny_loaded):
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    batched = llm.generate(PROMPTS, params)
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    expected = [_hf_greedy(hf, o.prompt_token_ids, 8) for o in batched]
    assert [o.token_ids for o in batched] == expected
    alone = [llm.generate(p, params)[0].token_ids for p in PROMPTS]
    assert alone == expected
    chunked = LLM(tiny_loaded, policy="vllm", max_num_batched_tokens=3).generate(PROMPTS, params)
    assert [o.token_ids for o in chunked] == expected


def test_token_id_prompts_chat_template_and_eos(llm, tiny_loaded):
    ids = llm.tokenizer.encode("Hello there")
    by_ids = llm.generate([ids], SamplingParams(max_tokens=5, ignore_eos=True))[0]
    by_text = llm.generate("Hello there", SamplingParams(max_tokens=5, ignore_eos=True))[0]
    assert by_ids.prompt is None and by_ids.token_ids == by_text.token_ids
    chat = llm.generate("Hello there", SamplingParams(max_tokens=2), use_chat_template=True)[0]
    assert len(chat.prompt_token_ids) > len(ids)
    assert llm.tokenizer.decode(chat.prompt_token_ids).count("Hello there") == 1
    # Stopping on the first sampled token as if it were EOS: reason "stop" after one token.
    first = by_text.token_ids[0]
    stopped = llm.generate("Hello there", SamplingParams(max_tokens=5, stop_token_ids=(first,)))[0]
    assert stopped.finish_reason == "stop" and stopped.token_ids == [first]


def test_user_errors(llm):
    with pytest.raises(ValueError, match="one per prompt"):
        llm.generate(PROMPTS, [SamplingParams()] * 2)
    with pytest.raises(ValueError, match="unknown SLO class"):
        llm.generate("hi", slo_classes="nope")
    with pytest.raises(ValueError, match="unknown policy"):
        LLM(llm.model, policy="nope")
