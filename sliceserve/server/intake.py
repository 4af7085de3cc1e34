"""From HTTP bytes to a checked request body, off the event loop.

JSON parsing, validation and tokenising a long prompt can take seconds of CPU; done on the event loop they
would stall every other connection (a 10 MB prompt froze /health for 6 s). So the body is read on the loop
(size-limited by the gate middleware) and everything else runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request as HTTPRequest
from pydantic import ValidationError

from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest, validation_error
from sliceserve.server.fields import check_rejected
from sliceserve.server.state import ServingState
from sliceserve.server.validation import check_penalties, check_prompt_length, check_sampling, check_strings

Body = CompletionRequest | ChatRequest


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


def validate_body(model: type[Body], raw: bytes, vocab_size: int, max_model_len: int,
                  max_token_chars: int | None) -> Body:
    """The checked body; every problem with it is an APIError (400) naming the field."""
    data = parse_json(raw)
    check_strings(data)
    check_penalties(data)
    check_rejected(data, "chat" if model is ChatRequest else "completions")   # refused fields, by name
    # Strict: a known field of the wrong type ("5" for max_tokens, 1e30 for top_k) is an error, not coerced.
    body = _validated(model, data, strict=True)
    body = check_sampling(body, vocab_size)
    check_prompt_length(body, max_model_len, max_token_chars)
    return body


def _validated(model: type, data: dict[str, Any], strict: bool | None) -> Any:
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply", code="invalid_json") from None


def validate_json(model: type, raw: bytes) -> Any:
    """A JSON body of another route (Ollama, embeddings) checked against its model; problems are 400s."""
    data = parse_json(raw)
    check_strings(data)
    # strict=None, not False: lax where the model is lax, but a field the model marks strict (token ids as
    # StrictInt: JSON `true` is no token) stays strict; strict=False would override it.
    return _validated(model, data, strict=None)


async def read_body(http: HTTPRequest, model: type) -> Any:
    """`validate_json` off the event loop (the gate middleware has already bounded the body's size)."""
    raw = await http.body()
    return await asyncio.to_thread(validate_json, model, raw)


async def read_request(http: HTTPRequest, state: ServingState, model: type[Body]) -> Body:
    """A generation body, parsed and checked in a worker thread (the event loop only reads the bytes)."""
    raw = await http.body()
    return await asyncio.to_thread(validate_body, model, raw, state.vocab_size, state.max_model_len,
                                   state.max_token_chars)
