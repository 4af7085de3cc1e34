"""The Ollama API through the official `ollama` client and LangChain's ChatOllama against a live server on
loopback: answers equal the OpenAI routes' (greedy), streams add up to the full answer, timings are
consistent, SLOs ride along, and every option the server cannot honour is refused naming it."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.server.helpers import LiveServer, make_state

ollama = pytest.importorskip("ollama")

# Greedy, and without Ollama's default repeat penalty (1.1 over the last 64 tokens): the OpenAI routes' greedy.
GREEDY = {"temperature": 0, "num_predict": 6, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def server(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory(), slo_scale=1000)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, timeout=60)


def _openai_chat(server, content: str, n: int) -> str:
    resp = server.openai().chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                   max_tokens=n, temperature=0)
    return resp.choices[0].message.content


def test_version_list_show_ps(client, server):
    assert httpx.get(server.url + "/api/version").json()["version"]
    listed = client.list().models
    assert [m.model for m in listed] == ["tiny:latest"] and listed[0].details.family == "llama"
    shown = client.show("tiny")
    assert "completion" in shown.capabilities and "embedding" in shown.capabilities
    assert shown.modelinfo["llama.context_length"] == server.state.max_model_len
    assert shown.template == server.state.tokenizer.chat_template
    running = client.ps().models
    assert running[0].model == "tiny:latest" and running[0].context_length == server.state.max_model_len
    with pytest.raises(ollama.ResponseError) as err:
        client.show("llama3.2")
    assert err.value.status_code == 404 and "llama3.2" in err.value.error


def test_chat_matches_openai_route_and_reports_timings(client, server):
    resp = client.chat(model="tiny", messages=[{"role": "user", "content": "Hi there!"}], options=GREEDY,
                       stream=False)
    assert resp.message.role == "assistant"
    assert resp.message.content == _openai_chat(server, "Hi there!", 6)
    assert resp.done and resp.done_reason in ("stop", "length") and 1 <= resp.eval_count <= 6
    tok = server.state.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "Hi there!"}], tokenize=False,
                                   add_generation_prompt=True)
    n_prompt = len(tok.encode(text, add_special_tokens=False))
    assert resp.prompt_eval_count == n_prompt and resp.load_duration == 0
    assert 0 < resp.prompt_eval_duration and 0 <= resp.eval_duration
    assert resp.total_duration >= resp.prompt_eval_duration + resp.eval_duration


def test_chat_streaming_adds_up(client):
    kw = dict(model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Name a colour."}], options=GREEDY)
    full = client.chat(stream=False, **kw)
    parts = list(client.chat(stream=True, **kw))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == full.message.content
    assert parts[-1].eval_count == full.eval_count


def test_generate_templated_raw_and_context(client, server):
    templated = client.generate(model="tiny", prompt="Hi there!", options=GREEDY)
    assert templated.response == _openai_chat(server, "Hi there!", 6)
    raw = client.generate(model="tiny", prompt="The quick brown fox", raw=True, options=GREEDY)
    expected = server.openai().completions.create(model="tiny", prompt="The quick brown fox", max_tokens=6,
                                                  temperature=0).choices[0].text
    assert raw.response == expected
    prompt = server.state.tokenizer.encode("The quick brown fox")
    assert list(raw.context[:len(prompt)]) == prompt and len(raw.context) == len(prompt) + raw.eval_count
    streamed = list(client.generate(model="tiny", prompt="The quick brown fox", raw=True, options=GREEDY,
                                    stream=True))
    assert "".join(p.response for p in streamed) == raw.response and streamed[-1].context == raw.context
    # context continues a conversation: the same ids as the prompt give the same answer
    cont = client.generate(model="tiny", prompt="", context=prompt, raw=True, options=GREEDY)
    assert cont.response == raw.response
    loaded = client.generate(model="tiny")     # Ollama's "load the model" request
    assert loaded.done and loaded.done_reason == "load"


def test_raw_ndjson_stream(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Count to three."}], "options": GREEDY}
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert lines and all(not x["done"] for x in lines[:-1]) and lines[-1]["done"]
    final = lines[-1]
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                "eval_duration"):
        assert isinstance(final[key], int), key
    assert final["slo_report"]["met"] in (True, False)


def test_slo_rides_along_in_body_and_headers(server):
    # The ollama client has no field for the SLO extensions: body fields go directly, headers also through it.
    body = {"model": "tiny", "prompt": "Hi", "stream": False, "options": GREEDY, "slo": {"ttft_ms": 20000},
            "slo_class": "interactive"}
    report = httpx.post(server.url + "/api/generate", json=body, headers={"x-slo-tpot-ms": "30000"},
                        timeout=60).json()["slo_report"]
    assert report["slo_class"] == "interactive"
    assert report["slo"]["ttft_ms"] == 20000 and report["slo"]["tpot_ms"] == 30000
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": False, "options": GREEDY}
    report = httpx.post(server.url + "/api/chat", json=body, headers={"x-slo-ttft-ms": "40000"},
                        timeout=60).json()["slo_report"]
    assert report["slo"]["ttft_ms"] == 40000 and report["slo_class"] == "custom"
    bad = httpx.post(server.url + "/api/chat", json=body, headers={"x-slo-ttft-ms": "soon"}, timeout=60)
    assert bad.status_code == 400 and "x-slo-ttft-ms" in bad.json()["error"]


@pytest.mark.parametrize("kw, field", [
    ({"options": {"repeat_last_n": -5}}, "repeat_last_n"),
    ({"options": {"penalize_newline": False}}, "penalize_newline"),
    ({"options": {"repeat_penalty": 0}}, "repeat_penalty"),
    ({"options": {"mirostat": 2}}, "mirostat"),
    ({"options": {"num_thread": 4}}, "num_thread"),
    ({"options": {"num_gpu": 1}}, "num_gpu"),
    ({"options": {"not_an_option": 1}}, "not_an_option"),
    ({"options": {"num_predict": 0}}, "num_predict"),
    ({"options": {"num_ctx": 10 ** 6}}, "num_ctx"),
    ({"options": {"temperature": -1}}, "temperature"),
    ({"options": {"num_predict": "many"}}, "num_predict"),
    ({"options": {"num_ctx": [1]}}, "num_ctx"),
    ({"options": {"stop": 5}}, "stop"),
    ({"format": "yaml"}, "format"),
    ({"format": ["json"]}, "format"),
    ({"options": {"min_p": 2}}, "min_p"),
    ({"images": ["aGVsbG8="]}, "images"),
    ({"think": True}, "think"),
    ({"template": "{{ .Prompt }}"}, "template"),
    ({"suffix": "end"}, "suffix"),
    ({"bogus_field": 1}, "bogus_field"),
])
def test_unsupported_options_are_refused_naming_them(server, kw, field):
    resp = httpx.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "Hi", **kw}, timeout=30)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["error"]


def test_chat_refusals_and_neutral_values(client):
    # A tool result must answer an earlier call (Ollama pairs them by order and tool_name).
    for msgs in ([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "21", "tool_name": "f"}],
                 [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "g", "arguments": {}}}]},
                  {"role": "tool", "content": "21", "tool_name": "f"}]):
        with pytest.raises(ollama.ResponseError) as err:
            client.chat(model="tiny", messages=msgs)
        assert err.value.status_code == 400 and "must answer a call" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="tiny", messages=[{"role": "user", "content": "What is this?", "images": [b"\x89PNG"]}])
    assert err.value.status_code == 400 and "images" in err.value.error
    # Neutral values of the unsupported knobs mean "off": accepted (and honoured, trivially)
    ok = client.chat(model="tiny", messages=[{"role": "user", "content": "Hi"}], keep_alive="5m",
                     options={**GREEDY, "repeat_penalty": 1.0, "mirostat": 0, "repeat_last_n": 64})
    assert ok.done


def test_embed_routes_match_openai_embeddings(client, server):
    texts = ["The cat sleeps.", "Rain falls on the roof."]
    new = client.embed(model="tiny", input=texts).embeddings
    legacy = [client.embeddings(model="tiny", prompt=t).embedding for t in texts]
    oa = server.openai().embeddings.create(model="tiny", input=texts)   # the client asks for base64
    assert [d.index for d in oa.data] == [0, 1] and oa.usage.prompt_tokens > 0
    for a, b, c in zip(new, legacy, (d.embedding for d in oa.data)):
        assert len(a) == 64 and a == pytest.approx(b, abs=1e-6) and a == pytest.approx(c, abs=1e-6)
        assert sum(x * x for x in a) == pytest.approx(1.0, abs=1e-5)
    assert new[0] != pytest.approx(new[1], abs=1e-3)
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="tiny", input="x", dimensions=8)
    assert err.value.status_code == 400 and "dimensions" in err.value.error


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_embed_refuses_booleans_as_token_ids(server, path):
    # JSON true/false are not token ids 1/0 (lax validation coerced them: found by schemathesis).
    resp = httpx.post(server.url + path, json={"model": "tiny", "input": [[True], [False, True]]}, timeout=60)
    assert resp.status_code == 400 and "input" in resp.text, resp.text
    ok = httpx.post(server.url + path, json={"model": "tiny", "input": [[1], [0, 1]]}, timeout=60)
    assert ok.status_code == 200, ok.text


def test_legacy_embeddings_checks_the_body_of_an_empty_prompt(server):
    # An empty prompt gets Ollama's empty vector, but options sent with it are refused, not dropped.
    empty = httpx.post(server.url + "/api/embeddings", json={"model": "tiny", "prompt": ""}, timeout=60)
    assert empty.status_code == 200 and empty.json() == {"embedding": []}
    bad = httpx.post(server.url + "/api/embeddings", json={"model": "tiny", "prompt": "", "options": {"seed": 1}},
                     timeout=60)
    assert bad.status_code == 400 and "seed" in bad.text, bad.text


def test_langchain_chat_ollama(server):
    chat_models = pytest.importorskip("langchain_ollama")
    llm = chat_models.ChatOllama(model="tiny", base_url=server.url, temperature=0, num_predict=6)
    msg = llm.invoke("Hi there!")
    assert msg.content == _openai_chat(server, "Hi there!", 6)
    assert msg.response_metadata["done"] is True and msg.usage_metadata["output_tokens"] >= 1
    assert "".join(c.content for c in llm.stream("Hi there!")) == msg.content


def test_min_p_is_honoured(client):
    """min_p = 1 keeps only the most likely token: a hot, seeded sample then equals the greedy answer."""
    msgs = [{"role": "user", "content": "Hi there!"}]
    greedy = client.chat(model="tiny", messages=msgs, options=GREEDY).message.content
    hot = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "num_predict": 6}
    kept = [client.chat(model="tiny", messages=msgs, options={**hot, "seed": s, "min_p": 1.0}).message.content
            for s in range(3)]
    assert kept == [greedy] * 3
    free = {client.chat(model="tiny", messages=msgs, options={**hot, "seed": s}).message.content for s in range(3)}
    assert free != {greedy}       # the control: without min_p the same samples wander

