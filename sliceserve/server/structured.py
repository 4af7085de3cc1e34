"""Which grammar a request asks for: OpenAI's `response_format`, vLLM's `structured_outputs` and
`guided_*` fields, or tool calls (server/tools.py). At most one may be given: two constraints on one
answer would need their intersection, which no client expects; that is a 400 naming the second field."""
from __future__ import annotations

import asyncio
from typing import Any

from sliceserve.model.guided import GrammarError, StructuredOutputs, compile_matcher
from sliceserve.server import tools
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest

_STRUCTURED_KEYS = ("json", "regex", "choice", "grammar", "json_object")


def _candidates(body: CompletionRequest | ChatRequest) -> list[tuple[str, StructuredOutputs]]:
    found: list[tuple[str, StructuredOutputs]] = []
    rf = body.response_format
    if rf is not None and rf.type != "text":
        if rf.type == "json_object":
            found.append(("response_format", StructuredOutputs(json_object=True)))
        else:
            if rf.json_schema is None:
                raise APIError(400, "response_format json_schema needs a json_schema object", param="response_format")
            found.append(("response_format", StructuredOutputs(json=rf.json_schema.schema_)))
    if body.structured_outputs is not None:
        so = {k: v for k, v in body.structured_outputs.items() if v is not None and v is not False}
        unknown = set(so) - set(_STRUCTURED_KEYS)
        if unknown:
            raise APIError(400, f"structured_outputs has unknown keys {sorted(unknown)}; known: "
                           f"{', '.join(_STRUCTURED_KEYS)}", param="structured_outputs")
        found.append(("structured_outputs", StructuredOutputs(**so)))
    for name, key in (("guided_json", "json"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                      ("guided_grammar", "grammar")):
        value = getattr(body, name)
        if value is not None:
            found.append((name, StructuredOutputs(**{key: value})))
    if isinstance(body, ChatRequest):
        tools.check(body)
        lark = tools.grammar(body)
        if lark is not None:
            found.append(("tools", StructuredOutputs(grammar=lark)))
    return found


def spec_for(body: CompletionRequest | ChatRequest) -> StructuredOutputs | None:
    try:
        found = _candidates(body)
    except GrammarError as exc:
        raise APIError(400, str(exc), param="structured_outputs") from None
    if len(found) > 1:
        raise APIError(400, f"`{found[1][0]}` cannot be combined with `{found[0][0]}`: give one constraint",
                       param=found[1][0])
    return found[0][1] if found else None


async def compile_spec(spec: StructuredOutputs | None, tokenizer: Any, param: str = "response_format") -> None:
    """Compile (or find cached) in a worker thread: the event loop and the engine thread never wait."""
    if spec is None:
        return
    try:
        await asyncio.to_thread(compile_matcher, spec, tokenizer)
    except GrammarError as exc:
        raise APIError(400, str(exc), param=param, code="invalid_grammar") from None
