"""Every request field of OpenAI's chat / completions schemas (and the vLLM extensions served here):
honoured, or answered with a 400 naming it. This table is the single source: the request models declare
these fields, `check_rejected` enforces the rejections, docs/SERVER.md prints the table and
tests/server/test_field_table.py walks it against a live server.

A field not in the table (a typo, another vendor's extension) is refused by the request models
(`extra="forbid"`), so nothing a client sends is dropped in silence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sliceserve.server.protocol import APIError

CHAT, COMPLETIONS, BOTH = ("chat",), ("completions",), ("chat", "completions")
_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}]


@dataclass(frozen=True)
class Field:
    name: str
    endpoints: tuple[str, ...]
    supported: bool
    why: str
    example: Any                     # a value the test sends: honoured, or refused with 400 (None: the
    accepted: tuple[Any, ...] = ()   # body's own required fields); accepted: for a rejected field, values
    needs: dict[str, Any] | None = None   # that ask for nothing; needs: fields the example needs beside it


FIELDS: tuple[Field, ...] = (
    Field("model", BOTH, True, "must name the served model (404 otherwise)", "tiny"),
    Field("messages", CHAT, True, "text content parts; roles system, developer, user, assistant (with "
          "tool_calls), tool (its tool_call_id must name an earlier call); `name` is rendered before the "
          "content", None),
    Field("prompt", COMPLETIONS, True, "a string, a list of strings, token ids, or a list of token-id lists "
          "(one choice per prompt and n)", None),
    Field("max_tokens", BOTH, True, "", 3),
    Field("max_completion_tokens", CHAT, True, "same as max_tokens", 3),
    Field("temperature", BOTH, True, "", 0.5),
    Field("top_p", BOTH, True, "", 0.9),
    Field("n", BOTH, True, "samples share the prompt's KV blocks through the prefix cache", 2),
    Field("seed", BOTH, True, "sample i of a request uses seed + i", 7),
    Field("stop", BOTH, True, "", ["\n\n"]),
    Field("stream", BOTH, True, "", False),
    Field("stream_options", BOTH, True, "include_usage", {"include_usage": False}),
    Field("presence_penalty", BOTH, True, "", 0.5),
    Field("frequency_penalty", BOTH, True, "", 0.5),
    Field("logit_bias", BOTH, True, "token id (as a string) -> bias in [-100, 100]", {"11": -5}),
    Field("logprobs", CHAT, True, "bool", True),
    Field("logprobs", COMPLETIONS, True, "0-20 alternatives", 1),
    Field("top_logprobs", CHAT, True, "0-20, with logprobs", 2, needs={"logprobs": True}),
    Field("echo", COMPLETIONS, True, "prompt text (and prompt logprobs with logprobs) before the completion",
          True),
    Field("response_format", BOTH, True, "text, json_object, json_schema (llguidance grammar)",
          {"type": "text"}),
    Field("tools", CHAT, True, "rendered into the system prompt (the embedded template has no tool syntax)",
          _TOOLS),
    Field("tool_choice", CHAT, True, "none, auto, required, or a named function (grammar-constrained)",
          "required", needs={"tools": _TOOLS}),
    Field("parallel_tool_calls", CHAT, True, "false: at most one call", False, needs={"tools": _TOOLS}),
    Field("user", BOTH, True, "logged with the request id", "user-1"),
    Field("safety_identifier", CHAT, True, "logged with the request id", "user-1"),
    Field("service_tier", CHAT, True, "auto or default (there is one tier; echoed back); others: 400",
          "auto"),
    Field("store", CHAT, True, "false only: nothing is stored", False),
    Field("modalities", CHAT, True, "[\"text\"] only", ["text"]),
    Field("best_of", COMPLETIONS, False, "server-side best-of ranking is not implemented: use n with logprobs",
          3, (None, 1)),
    Field("suffix", COMPLETIONS, False, "insertion (fill-in-the-middle) needs a model trained for it", "end",
          (None, "")),
    Field("metadata", CHAT, False, "belongs to stored completions, which this server does not keep",
          {"k": "v"}, (None,)),
    Field("audio", CHAT, False, "text-only model", {"voice": "alloy", "format": "wav"}, (None,)),
    Field("prediction", CHAT, False, "predicted outputs (speculative decoding) are not implemented",
          {"type": "content", "content": "x"}, (None,)),
    Field("web_search_options", CHAT, False, "no web search on an edge device", {}, (None,)),
    Field("reasoning_effort", CHAT, False, "the model has no reasoning mode", "low", (None,)),
    Field("verbosity", CHAT, False, "the model has no verbosity control", "low", (None,)),
    Field("prompt_cache_key", CHAT, False, "one server, one prefix cache: there is nothing to route", "k",
          (None,)),
    Field("functions", CHAT, False, "deprecated by OpenAI: use tools",
          [{"name": "f", "parameters": {"type": "object"}}], (None,)),
    Field("function_call", CHAT, False, "deprecated by OpenAI: use tool_choice", "auto", (None,)),
    # vLLM extensions
    Field("top_k", BOTH, True, "vLLM; 0 disables", 5),
    Field("min_p", BOTH, True, "vLLM", 0.05),
    Field("repetition_penalty", BOTH, True, "vLLM / CTRL", 1.1),
    Field("min_tokens", BOTH, True, "vLLM: end tokens barred until this many", 1),
    Field("stop_token_ids", BOTH, True, "vLLM", [0]),
    Field("ignore_eos", BOTH, True, "vLLM", True),
    Field("structured_outputs", BOTH, True, "vLLM: {json | regex | choice | grammar | json_object}",
          {"choice": ["yes", "no"]}),
    Field("guided_json", BOTH, True, "vLLM (older name)", {"type": "object"}),
    Field("guided_regex", BOTH, True, "vLLM (older name)", "[a-z]{1,3}"),
    Field("guided_choice", BOTH, True, "vLLM (older name)", ["yes", "no"]),
    Field("guided_grammar", BOTH, True, "vLLM (older name); Lark or GBNF", 'start: "ok"'),
    Field("prompt_logprobs", COMPLETIONS, True, "vLLM: logprobs of every prompt token", 1),
    # sliceserve's own
    Field("slo", BOTH, True, "sliceserve: {ttft_ms, tpot_ms, e2e_ms} or SLO text (request scope)", "e2e <= 600s"),
    Field("slo_class", BOTH, True, "sliceserve: a configured class", "batch"),
    Field("utility", BOTH, True, "sliceserve", 2.0),
    Field("priority", BOTH, True, "vLLM-style, lower first", 0),
)

_BY_NAME = {f.name: f for f in FIELDS}
_REJECTED = tuple(f for f in FIELDS if not f.supported)


def check_rejected(data: dict[str, Any], endpoint: str) -> None:
    """400 naming the first field of the raw body that this server refuses (unless it asks for nothing)."""
    for f in _REJECTED:
        if endpoint in f.endpoints and f.name in data and data[f.name] not in f.accepted:
            raise APIError(400, f"`{f.name}` is not supported: {f.why}", param=f.name, code="unsupported_field")


def field_names(endpoint: str) -> set[str]:
    return {f.name for f in FIELDS if endpoint in f.endpoints}


def markdown_table() -> str:
    """The table docs/SERVER.md carries (a test checks they agree)."""
    rows = ["| field | endpoints | status | notes |", "|---|---|---|---|"]
    for f in FIELDS:
        where = "both" if f.endpoints == BOTH else f.endpoints[0]
        rows.append(f"| `{f.name}` | {where} | {'supported' if f.supported else 'rejected (400)'} | {f.why} |")
    return "\n".join(rows)
