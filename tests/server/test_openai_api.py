"""Completions and chat through the real `openai` client against a live server on loopback."""
from __future__ import annotations

import httpx
import pytest

from tests.server.helpers import LiveServer, make_state


@pytest.fixture(scope="module")
def server(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory())) as live:
        yield live


def test_models_health_ready(server):
    client = server.openai()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/health").status_code == 200
    ready = httpx.get(server.url + "/ready").json()
    assert ready["ready"] is True and ready["engine_alive"] is True


def test_completion_non_streaming_usage_and_length(server):
    client = server.openai()
    resp = client.completions.create(model="tiny", prompt="Hello there", max_tokens=7, temperature=0,
                                      extra_body={"ignore_eos": True})
    prompt_len = len(server.state.tokenizer.encode("Hello there"))
    assert resp.usage.prompt_tokens == prompt_len
    assert resp.usage.completion_tokens == 7
    assert resp.usage.total_tokens == prompt_len + 7
    assert resp.choices[0].finish_reason == "length"
    assert isinstance(resp.choices[0].text, str)


def test_greedy_is_deterministic_and_stream_matches(server):
    client = server.openai()
    kw = dict(model="tiny", prompt="The quick brown fox", max_tokens=12, temperature=0,
              extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    assert client.completions.create(**kw).choices[0].text == full
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_non_streaming(server):
    client = server.openai()
    resp = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi!"}],
                                          max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    msg = resp.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert resp.usage.completion_tokens == 5
    assert resp.choices[0].finish_reason == "length"
    assert resp.object == "chat.completion"


def test_chat_streaming_with_usage(server):
    client = server.openai()
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi!"}],
                                            max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    full = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi!"}], max_tokens=6,
                                          temperature=0, extra_body={"ignore_eos": True})
    assert text == full.choices[0].message.content


def test_sse_wire_format_ends_with_done(server):
    body = {"model": "tiny", "prompt": "abc", "max_tokens": 3, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_stop_token_gives_stop_reason(server):
    client = server.openai()
    kw = dict(model="tiny", prompt="Once upon a time", temperature=0)
    first = client.completions.create(max_tokens=3, extra_body={"ignore_eos": True}, **kw)
    # Greedy is deterministic: stopping on the second token's id must end the request there.
    ids = server.state.tokenizer.encode(first.choices[0].text, add_special_tokens=False)
    resp = client.completions.create(max_tokens=10, extra_body={"ignore_eos": True, "stop_token_ids": [ids[0]]}, **kw)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 1
