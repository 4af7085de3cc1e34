"""Tool calling: tools rendered into the prompt, calls constrained by a grammar, output parsed into
OpenAI `tool_calls`.

The embedded model's chat template has no tool syntax, so tools are rendered as a system-prompt section
(appended to the first system message, or a new one) that asks for calls written as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes / Qwen convention). Earlier calls
in an assistant message are rendered back in that form, and `role: tool` results as their own turns.

tool_choice: `none` renders no tools and constrains nothing; `required` and a named function force one
call (several with parallel_tool_calls) whose arguments match the function's JSON schema; `auto` lets the
model answer in prose or call tools, but an answer starting with `<` must be well-formed calls. All three
grammars are llguidance Lark grammars embedding the functions' schemas, so calls always parse.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from sliceserve.model.guided import closed
from sliceserve.server.protocol import APIError, ChatRequest
from sliceserve.server.protocol_ext import NamedToolChoice

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_DECODER = json.JSONDecoder()
_COMPACT = {"whitespace_flexible": False}


def active(body: ChatRequest) -> bool:
    return bool(body.tools) and body.tool_choice != "none"


def forced(body: ChatRequest) -> bool:
    """Whether the answer must be tool calls (required, or a named function)."""
    return active(body) and (body.tool_choice == "required" or isinstance(body.tool_choice, NamedToolChoice))


def _functions(body: ChatRequest) -> list[Any]:
    funcs = [t.function for t in body.tools or []]
    if isinstance(body.tool_choice, NamedToolChoice):
        name = body.tool_choice.function.get("name")
        funcs = [f for f in funcs if f.name == name]
        if not funcs:
            raise APIError(400, f"tool_choice names function {name!r}, which is not in tools", param="tool_choice")
    return funcs


def check(body: ChatRequest) -> None:
    if body.tool_choice is not None and body.tool_choice != "none" and not body.tools:
        raise APIError(400, "tool_choice needs tools", param="tool_choice")
    if active(body):
        _functions(body)


def system_section(body: ChatRequest) -> str:
    specs = [{"name": f.name, "description": f.description or "", "parameters": f.parameters}
             for f in _functions(body)]
    many = "one or more calls" if body.parallel_tool_calls else "exactly one call"
    return ("You can call these tools:\n" + "\n".join(json.dumps(s) for s in specs) + "\n"
            f"To call tools, answer with {many}, each written as {OPEN}{{\"name\": <tool name>, \"arguments\": "
            f"<arguments as JSON>}}{CLOSE} and nothing else. Tool results come back as messages from `tool`.")


def render(body: ChatRequest) -> list[dict[str, str]]:
    """The messages as the chat template gets them: contents are strings, tool calls rendered as text."""
    out = []
    call_ids: set[str] = set()
    for m in body.messages:
        text = m.text()
        if m.role == "tool":
            if m.tool_call_id is None or m.tool_call_id not in call_ids:
                raise APIError(400, f"a tool message's tool_call_id ({m.tool_call_id!r}) must name a call of an "
                               "earlier assistant message", param="messages")
        elif m.tool_call_id is not None:
            raise APIError(400, "tool_call_id belongs on role tool messages", param="messages")
        if m.name:      # a participant's name (or the tool's) goes in front, where the model can read it
            text = f"{m.name}: {text}"
        call_ids.update(c.get("id") for c in m.tool_calls or [] if c.get("id"))
        if m.tool_calls:
            calls = [OPEN + json.dumps({"name": c.get("function", {}).get("name"),
                                        "arguments": _arguments(c.get("function", {}).get("arguments"))}) + CLOSE
                     for c in m.tool_calls]
            text = (text + "\n" if text else "") + "".join(calls)
        out.append({"role": m.role, "content": text})
    if active(body):
        section = system_section(body)
        if out and out[0]["role"] in ("system", "developer"):
            out[0] = {"role": out[0]["role"], "content": out[0]["content"] + "\n\n" + section}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw if raw is not None else {}


def grammar(body: ChatRequest) -> str | None:
    """The Lark grammar constraining the answer, or None (tool_choice none, or no tools)."""
    if not active(body):
        return None
    variants = [{"type": "object", "properties": {"name": {"const": f.name}, "arguments": closed(f.parameters)},
                 "required": ["name", "arguments"], "additionalProperties": False} for f in _functions(body)]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    schema = {**schema, "x-guidance": _COMPACT}
    calls = "call+" if body.parallel_tool_calls else "call"
    start = f"start: {calls}" if forced(body) else f"start: TEXT | {calls}\nTEXT: /[^<\\s](?s:.)*/"
    return f'{start}\ncall: "{OPEN}" body "{CLOSE}"\nbody: %json {json.dumps(schema)}\n'


def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of an answer: calls when it starts with a call, else plain content. Each call's
    JSON is read as JSON, not up to the next closing tag: an argument may itself contain "</tool_call>"."""
    if not text.lstrip().startswith(OPEN):
        return text, []
    calls = []
    at = text.find(OPEN)
    while at != -1:
        try:
            obj, end = _DECODER.raw_decode(text, _skip_space(text, at + len(OPEN)))
        except json.JSONDecodeError:
            break   # cut short by max_tokens: the unfinished call is not reported
        end = _skip_space(text, end)
        if not isinstance(obj, dict) or not text.startswith(CLOSE, end):
            break
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": obj.get("name"), "arguments": json.dumps(obj.get("arguments", {}))}})
        at = text.find(OPEN, end + len(CLOSE))
    return (None if calls else text), calls


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


class ToolStream:
    """Streaming: content passes through until the answer turns out to be tool calls; then each call is
    sent as one `tool_calls` delta as soon as its closing tag arrives."""

    def __init__(self) -> None:
        self.text = ""
        self.mode: str | None = None      # None until known, "content" or "tools"
        self.num_calls = 0

    def push(self, piece: str, final: bool = False) -> tuple[str, list[dict[str, Any]]]:
        self.text += piece
        if self.mode is None:
            head = self.text.lstrip()
            if head and not OPEN.startswith(head[: len(OPEN)]):
                self.mode = "content"
                return self.text, []
            if head.startswith(OPEN):
                self.mode = "tools"
            elif not final:
                return "", []
            else:
                self.mode = "content"
                return self.text, []
        if self.mode == "content":
            return piece, []
        _, calls = parse(self.text)
        new = calls[self.num_calls:]
        self.num_calls = len(calls)
        return "", [{"index": self.num_calls - len(new) + i, **c} for i, c in enumerate(new)]

