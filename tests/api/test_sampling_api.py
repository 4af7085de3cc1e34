"""Logprobs (OpenAI's shapes), echo, n, batched prompts, penalties, logit_bias, min_tokens, cached_tokens
and the vLLM endpoints, through the real `openai` client and httpx on the embedded model."""
from __future__ import annotations

import math

import httpx
import pytest

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "Name three colours."}]


def test_chat_logprobs_shape_equals_openai(client):
    resp = client.chat.completions.create(model="smol", messages=MSG, max_tokens=6, temperature=0,
                                          logprobs=True, top_logprobs=3)
    raw = resp.model_dump()["choices"][0]["logprobs"]
    assert set(raw) >= {"content", "refusal"}
    content = raw["content"]
    assert len(content) == resp.usage.completion_tokens
    text = ""
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(entry["bytes"]).decode() == entry["token"]
        assert len(entry["top_logprobs"]) == 3
        assert all(set(t) == {"token", "logprob", "bytes"} for t in entry["top_logprobs"])
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert tops == sorted(tops, reverse=True) and sum(math.exp(v) for v in tops) <= 1 + 1e-5
        assert entry["logprob"] == pytest.approx(tops[0], abs=1e-5)   # greedy: the best token was chosen
        text += entry["token"]
    assert text == resp.choices[0].message.content


def test_streamed_chat_logprobs_cover_every_token(client):
    stream = client.chat.completions.create(model="smol", messages=MSG, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=1, stream=True)
    entries = [e for ch in stream for c in ch.choices if c.logprobs for e in c.logprobs.content]
    assert len(entries) == 6 and all(len(e.top_logprobs) == 1 for e in entries)


def test_completion_logprobs_and_echo_shape(client):
    prompt = "The capital of France is"
    resp = client.completions.create(model="smol", prompt=prompt, max_tokens=3, temperature=0, logprobs=2,
                                     echo=True)
    c = resp.choices[0]
    lp = c.logprobs.model_dump()
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n_prompt = resp.usage.prompt_tokens
    assert len(lp["tokens"]) == n_prompt + resp.usage.completion_tokens
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(isinstance(v, float) and v <= 0 for v in lp["token_logprobs"][1:])
    assert all(1 <= len(t) <= 2 for t in lp["top_logprobs"][1:])
    assert c.text.startswith(prompt) and "".join(lp["tokens"]) == c.text
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]


def test_n_returns_three_distinct_choices(client):
    resp = client.chat.completions.create(model="smol", messages=MSG, max_tokens=12, temperature=1.0, n=3,
                                          seed=5)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    texts = [c.message.content for c in resp.choices]
    assert len(set(texts)) > 1       # seeds 5, 6, 7: independent samples
    again = client.chat.completions.create(model="smol", messages=MSG, max_tokens=12, temperature=1.0, n=3,
                                           seed=5)
    assert [c.message.content for c in again.choices] == texts     # reproducible with a seed
    # The siblings found the prompt's KV blocks in the prefix cache.
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def _ids(server, text: str) -> list[int]:
    return httpx.post(server.url + "/tokenize", json={"prompt": text}).json()["tokens"]


def test_batched_prompts_each_a_choice_with_its_index(client, server):
    prompts = ["One, two,", "Monday, Tuesday,", "red, green,"]
    batch = client.completions.create(model="smol", prompt=prompts, max_tokens=4, temperature=0)
    singles = [client.completions.create(model="smol", prompt=p, max_tokens=4, temperature=0) for p in prompts]
    assert [c.index for c in batch.choices] == [0, 1, 2]
    assert [c.text for c in batch.choices] == [s.choices[0].text for s in singles]
    ids = [_ids(server, p) for p in prompts]
    by_ids = client.completions.create(model="smol", prompt=ids, max_tokens=4, temperature=0, n=2)
    assert [c.index for c in by_ids.choices] == list(range(6))
    assert [c.text for c in by_ids.choices[::2]] == [c.text for c in batch.choices]


def test_penalties_bias_min_tokens_and_stop_token_ids_change_output(client, server):
    kw = dict(model="smol", prompt="Repeat after me: la la la la la la", max_tokens=12, temperature=0)
    plain = client.completions.create(**kw).choices[0].text
    # (presence_penalty's arithmetic is checked in tests/model/test_logits_processing.py: a flat -2 does not
    # outweigh this model's certainty that " la" comes next)
    for extra in ({"frequency_penalty": 2.0}, {"extra_body": {"repetition_penalty": 2.0}}):
        assert client.completions.create(**kw, **extra).choices[0].text != plain, extra
    first = _ids(server, plain)[0]
    banned = client.completions.create(**kw, logit_bias={str(first): -100}).choices[0].text
    assert _ids(server, banned)[0] != first
    forced = client.completions.create(**{**kw, "max_tokens": 3}, logit_bias={"28": 100})   # token 28 each time
    piece = httpx.post(server.url + "/detokenize", json={"tokens": [28]}).json()["prompt"]
    assert forced.choices[0].text == piece * 3
    stopped = client.completions.create(**kw, extra_body={"stop_token_ids": [first]})
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == 1
    eos_early = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say OK."}],
                                               max_tokens=40, temperature=0)
    assert eos_early.choices[0].finish_reason == "stop"
    n_free = eos_early.usage.completion_tokens
    longer = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say OK."}],
                                            max_tokens=40, temperature=0, extra_body={"min_tokens": n_free + 5})
    assert longer.usage.completion_tokens >= n_free + 5


def test_vllm_endpoints(server):
    url = server.url
    tok = httpx.post(url + "/tokenize", json={"prompt": "hello world", "add_special_tokens": False}).json()
    assert tok["count"] == len(tok["tokens"]) and tok["max_model_len"] == 1024
    assert httpx.post(url + "/detokenize", json={"tokens": tok["tokens"]}).json()["prompt"] == "hello world"
    chat = httpx.post(url + "/tokenize", json={"messages": MSG}).json()
    assert chat["count"] > tok["count"]
    assert httpx.get(url + "/v1/models/smol").json()["id"] == "smol"
    assert httpx.get(url + "/v1/models/other").status_code == 404
    from sliceserve import __version__

    assert httpx.get(url + "/version").json() == {"version": __version__}


def test_ollama_penalties_count_the_last_repeat_last_n_tokens_with_ollamas_defaults(client, server):
    """Ollama's repeat_penalty applies as llama.cpp's, over the last repeat_last_n tokens of prompt and answer;
    absent, Ollama's defaults (1.1 over 64). While that window holds the whole conversation (34 prompt + 24
    answer tokens) it equals the OpenAI routes' repetition_penalty, which counts everything; repeat_last_n 0
    turns it off; a window of 8 reaches back only into the answer."""
    ollama = pytest.importorskip("ollama")
    ol = ollama.Client(host=server.url, timeout=600)
    msgs = [{"role": "user", "content": "Tell me a story"}]

    def openai(**kw) -> str:
        return client.chat.completions.create(model="smol", messages=msgs, max_tokens=24, temperature=0,
                                              **kw).choices[0].message.content

    def ours(**options) -> str:
        return ol.chat(model="smol", messages=msgs,
                       options={"temperature": 0, "num_predict": 24, **options}).message.content

    plain, strong = openai(), openai(extra_body={"repetition_penalty": 1.3})
    assert strong != plain                                 # the control: this penalty changes the answer
    assert ours(repeat_penalty=1.3) == strong
    assert ours(repeat_penalty=1.3, repeat_last_n=-1) == strong
    assert ours(repeat_penalty=1.3, repeat_last_n=0) == plain
    assert ours() == openai(extra_body={"repetition_penalty": 1.1})   # Ollama's defaults
    assert ours(repeat_penalty=1.3, repeat_last_n=8) != strong         # the prompt's tokens left the window
