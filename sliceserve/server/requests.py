"""From an OpenAI body (+ SLO headers) to a scheduler `Request`: tokens, sampling, SLO, class, utility.

Every user mistake raises APIError with the status the OpenAI API would give (400, or 404 for a model).
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import replace
from typing import Mapping

from sliceserve.request import Request, SamplingParams
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.state import ServingState
from sliceserve.slo import SLO

HEADER_TTFT = "x-slo-ttft-ms"
HEADER_TPOT = "x-slo-tpot-ms"


def check_model(state: ServingState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise APIError(404, f"The model `{model}` does not exist; this server serves `{state.model_name}`",
                       type="NotFoundError", param="model", code="model_not_found")


def prompt_ids(state: ServingState, body: CompletionRequest | ChatRequest) -> list[int]:
    tok = state.tokenizer
    if isinstance(body, ChatRequest):
        if not getattr(tok, "chat_template", None):
            raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tok.encode(text, add_special_tokens=False))
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise APIError(400, "only one prompt per request is supported", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = list(tok.encode(prompt))
    else:
        vocab = len(tok)
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", param="prompt")
        ids = list(prompt)
    if not ids:
        raise APIError(400, "prompt is empty", param="prompt")
    return ids


def _header_ms(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value / 1e3 > 0):    # 5e-324 ms is 0 s: no bound at all
        raise APIError(400, f"header {name} must be a positive number of milliseconds, got {raw!r}", param=name)
    return value / 1e3


def resolve_slo(state: ServingState, body: CompletionRequest | ChatRequest,
                headers: Mapping[str, str]) -> tuple[str, SLO, float]:
    """(class name, SLO, utility). Precedence per bound: body `slo` > headers > the class's default."""
    name = body.slo_class or state.settings.default_slo_class
    slo, utility = SLO(), 1.0
    if name is not None:
        cls = state.classes.get(name)
        if cls is None:
            raise APIError(400, f"unknown slo_class {name!r}; known: {', '.join(state.classes)}",
                           param="slo_class", code="unknown_slo_class")
        slo, utility = cls.slo, cls.utility
    slo = slo.merged(SLO(ttft_s=_header_ms(headers, HEADER_TTFT), tpot_s=_header_ms(headers, HEADER_TPOT)))
    if body.slo is not None:
        ms = lambda v: None if v is None else v / 1e3  # noqa: E731
        slo = slo.merged(SLO(ms(body.slo.ttft_ms), ms(body.slo.tpot_ms), ms(body.slo.e2e_ms)))
    if body.utility is not None:
        utility = body.utility
    if name is None and not slo.is_empty:
        # Own bounds, no class: grouped by utility, so per-class attainment and the controller (which sheds
        # the least valuable class while a more valuable one is at risk) can tell high- from low-value traffic.
        name = "custom" if utility == 1.0 else f"custom-u{utility:g}"
    return name or "default", slo, utility


def _max_tokens(state: ServingState, body: CompletionRequest | ChatRequest, num_prompt: int) -> int:
    limit = state.max_model_len
    if num_prompt >= limit:
        raise APIError(400, f"prompt has {num_prompt} tokens but max_model_len is {limit}; shorten the prompt",
                       param="prompt" if isinstance(body, CompletionRequest) else "messages",
                       code="context_length_exceeded")
    requested = body.max_tokens
    if isinstance(body, ChatRequest) and body.max_completion_tokens is not None:
        requested = body.max_completion_tokens
    if requested is None:
        return min(state.settings.default_max_tokens, limit - num_prompt)
    if requested <= 0:
        raise APIError(400, f"max_tokens must be at least 1, got {requested}", param="max_tokens")
    if num_prompt + requested > limit:
        raise APIError(400, f"prompt ({num_prompt} tokens) plus max_tokens ({requested}) exceeds max_model_len "
                       f"{limit}; lower max_tokens", param="max_tokens", code="context_length_exceeded")
    return requested


def build_request(state: ServingState, body: CompletionRequest | ChatRequest,
                  headers: Mapping[str, str]) -> Request:
    arrival = time.monotonic()    # TTFT counts from here: tokenising and queueing are part of it
    check_model(state, body.model)
    if body.n != 1:
        raise APIError(400, f"n={body.n} is not supported; send n=1", param="n")
    ids = prompt_ids(state, body)
    max_tokens = _max_tokens(state, body, len(ids))
    slo_class, slo, utility = resolve_slo(state, body, headers)
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_k=body.top_k,
                                top_p=body.top_p, seed=body.seed, stop=body.stop_list(),
                                stop_token_ids=tuple(body.stop_token_ids or ()), ignore_eos=body.ignore_eos)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    eos = list(getattr(state.loaded, "eos_token_ids", []) or [])
    if not params.ignore_eos and len(eos) > 1:   # the model's other end tokens stop it too
        params = replace(params, stop_token_ids=params.stop_token_ids + tuple(eos[1:]))
    prefix = "chatcmpl" if isinstance(body, ChatRequest) else "cmpl"
    return Request(f"{prefix}-{uuid.uuid4().hex}", ids, params, arrival, slo=slo, slo_class=slo_class,
                   utility=utility, priority=body.priority, eos_token_id=eos[0] if eos else None)
