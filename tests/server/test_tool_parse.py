"""Reading tool calls out of an answer (server/tools.py `parse`, which `ToolStream` uses too)."""
from __future__ import annotations

import json

from sliceserve.server.tools import ToolStream, parse


def _call(name: str, args: dict) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


def test_an_argument_may_contain_the_closing_tag():
    """Before: the call was read up to the first "</tool_call>", inside the string, and dropped as bad JSON."""
    tricky = {"note": "ends with </tool_call> and more"}
    content, calls = parse(_call("f", tricky) + _call("g", {"x": 1}))
    assert content is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [("f", tricky), ("g", {"x": 1})]


def test_prose_an_unfinished_call_and_a_stream():
    assert parse("Hello <tool_call>") == ("Hello <tool_call>", [])
    text = _call("f", {"a": 1}) + '<tool_call>{"name": "g", "argu'      # the second cut by max_tokens
    content, calls = parse(text)
    assert content is None and [c["function"]["name"] for c in calls] == ["f"]
    stream, got = ToolStream(), []
    whole = _call("f", {"s": "x</tool_call>y"})
    for i in range(0, len(whole), 5):
        piece = whole[i:i + 5]
        text, new = stream.push(piece, final=i + 5 >= len(whole))
        assert text == ""
        got += new
    assert [json.loads(c["function"]["arguments"]) for c in got] == [{"s": "x</tool_call>y"}]
