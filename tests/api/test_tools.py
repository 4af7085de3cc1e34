"""Tool calling through the real `openai` client: tool_choice auto / required / named, streamed and not;
calls parse and their arguments validate against the function's JSON schema."""
from __future__ import annotations

import json

import pytest

jsonschema = pytest.importorskip("jsonschema")
pytestmark = pytest.mark.slow

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}}, "required": ["timezone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
                                           "parameters": TIME}}]
SCHEMA = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
# An earlier exchange in the conversation: a call, its result (role tool), the answer.
HISTORY = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps({"city": "Rome", "unit": "celsius"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temperature": 21, "sky": "clear"})},
    {"role": "assistant", "content": "It is 21 degrees and clear in Rome."},
]


def _check_calls(calls, names=None) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function"
        assert names is None or call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMA[call.function.name])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forced_tool_call_parses_and_matches_schema(client, choice):
    resp = client.chat.completions.create(model="smol", messages=ASK, tools=TOOLS, tool_choice=choice,
                                          max_tokens=80, temperature=0)
    c = resp.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    _check_calls(c.message.tool_calls, None if choice == "required" else {"get_time"})
    if choice != "required":
        assert [t.function.name for t in c.message.tool_calls] == ["get_time"]


def test_auto_calls_a_tool_after_an_earlier_call_in_the_conversation(client):
    resp = client.chat.completions.create(model="smol", messages=HISTORY + ASK, tools=TOOLS, tool_choice="auto",
                                          max_tokens=80, temperature=0)
    c = resp.choices[0]
    assert c.finish_reason == "tool_calls", c.message.content
    _check_calls(c.message.tool_calls)
    assert json.loads(c.message.tool_calls[0].function.arguments)["city"] == "Paris"


def test_auto_may_answer_in_prose_and_none_never_calls(client):
    prose = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say hello."}],
                                           tools=TOOLS, tool_choice="none", max_tokens=10, temperature=0)
    assert prose.choices[0].message.tool_calls is None and prose.choices[0].message.content
    assert prose.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_streamed_tool_calls_arrive_as_deltas(client, choice):
    messages = ASK if choice == "required" else HISTORY + ASK
    stream = client.chat.completions.create(model="smol", messages=messages, tools=TOOLS, tool_choice=choice,
                                            max_tokens=80, temperature=0, stream=True)
    calls: dict[int, dict] = {}
    reasons, content = [], ""
    for chunk in stream:
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for d in ch.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            if ch.finish_reason:
                reasons.append(ch.finish_reason)
    assert reasons == ["tool_calls"] and content == ""
    for entry in calls.values():
        jsonschema.validate(json.loads(entry["arguments"]), SCHEMA[entry["name"]])
    assert calls


def test_tool_choice_errors_are_400(client):
    import openai

    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="smol", messages=ASK, tools=TOOLS, max_tokens=5,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert exc.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smol", messages=ASK, tool_choice="required", max_tokens=5)


# The same exchange as Ollama clients write it: arguments as an object, the result named by tool_name.
OLLAMA_HISTORY = [
    HISTORY[0],
    {"role": "assistant", "content": "", "tool_calls": [{"function": {
        "name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}}]},
    {"role": "tool", "tool_name": "get_weather", "content": json.dumps({"temperature": 21, "sky": "clear"})},
    HISTORY[3],
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_ollama_tools_call_through_the_ollama_client(server, stream):
    """Ollama's `tools` on /api/chat, through the official `ollama` client: the answer's `tool_calls` carry
    the function and its arguments as an object, valid against the function's schema as the client sends it
    (its Tool model keeps a property's type and enum, not maxLength). With Ollama's default repeat penalty,
    which counts the earlier get_weather call, the model may pick either function."""
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=server.url, timeout=600)
    kw = dict(model="smol", messages=OLLAMA_HISTORY + ASK, tools=TOOLS,
              options={"temperature": 0, "num_predict": 80})
    if stream:
        parts = list(client.chat(**kw, stream=True))
        calls = [c for p in parts for c in (p.message.tool_calls or [])]
        assert parts[-1].done and parts[-1].done_reason == "stop"
    else:
        resp = client.chat(**kw)
        calls = resp.message.tool_calls or []
        assert resp.done_reason == "stop" and resp.message.content == ""
    assert calls, "no tool call"
    for call in calls:
        sent = {k: v for k, v in SCHEMA[call.function.name].items()}
        sent["properties"] = {p: {k: v for k, v in spec.items() if k != "maxLength"}
                              for p, spec in sent["properties"].items()}
        jsonschema.validate(dict(call.function.arguments), sent)
    assert "Paris" in json.dumps(calls[0].function.arguments)
