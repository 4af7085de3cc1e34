"""From an OpenAI body (+ SLO headers) to a scheduler `Request`: tokens, sampling, SLO, class, utility.

Every user mistake raises APIError with the status the OpenAI API would give (400, or 404 for a model).
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import replace
from typing import Any, Mapping

from sliceserve.request import Request, SamplingParams
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.state import ServingState
from sliceserve.slo import SLO, parse_slo

log = logging.getLogger(__name__)
_MAX_N = 128     # choices per request (prompts x n): each is a scheduled request
HEADER_TTFT = "x-slo-ttft-ms"
HEADER_TPOT = "x-slo-tpot-ms"
HEADER_SLO = "x-slo"          # SLO text in the one grammar (sliceserve.slo.parse_slo), request scope


def check_model(state: ServingState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise APIError(404, f"The model `{model}` does not exist; this server serves `{state.model_name}`",
                       type="NotFoundError", param="model", code="model_not_found")


def chat_prompt_ids(state: ServingState, body: ChatRequest) -> list[int]:
    from sliceserve.server import tools

    tok = state.tokenizer
    if not getattr(tok, "chat_template", None):
        raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
    text = tok.apply_chat_template(tools.render(body), tokenize=False, add_generation_prompt=True)
    return list(tok.encode(text, add_special_tokens=False))


def completion_prompts(state: ServingState, body: CompletionRequest) -> list[list[int]]:
    """Every prompt of a completions request as token ids: a string, a list of strings, a list of token
    ids, or a list of token-id lists."""
    tok, prompt = state.tokenizer, body.prompt
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise APIError(400, "prompt is empty", param="prompt")
    vocab = len(tok)
    out = []
    for p in prompts:
        ids = list(tok.encode(p)) if isinstance(p, str) else list(p)
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", param="prompt")
        if not ids:
            raise APIError(400, "prompt is empty", param="prompt")
        out.append(ids)
    return out


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


def header_slo(headers: Mapping[str, str]) -> SLO:
    """The bounds the SLO headers set: x-slo-ttft-ms / x-slo-tpot-ms (milliseconds) and x-slo (text)."""
    slo = SLO(ttft_s=_header_ms(headers, HEADER_TTFT), tpot_s=_header_ms(headers, HEADER_TPOT))
    raw = headers.get(HEADER_SLO)
    if raw is None:
        return slo
    try:
        text = parse_slo(raw, scope="request").request_slo()
    except ValueError as exc:
        raise APIError(400, f"header {HEADER_SLO}: {exc}", param=HEADER_SLO) from None
    for metric in ("ttft", "tpot"):
        if getattr(slo, f"{metric}_s") is not None and getattr(text, f"{metric}_s") is not None:
            raise APIError(400, f"{metric} is given twice: header x-slo-{metric}-ms and header {HEADER_SLO}; keep one",
                           param=HEADER_SLO)
    return slo.merged(text)


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
    slo = slo.merged(header_slo(headers))
    if body.slo is not None:
        slo = slo.merged(body.slo.bounds())
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


def _logprob_counts(body: CompletionRequest | ChatRequest) -> tuple[int | None, int | None]:
    """(logprobs, prompt_logprobs) for SamplingParams: alternatives per sampled / prompt token, or None."""
    if isinstance(body, ChatRequest):
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return (body.top_logprobs or 0) if body.logprobs else None, None
    prompt = body.prompt_logprobs
    if body.echo and body.logprobs is not None and prompt is None:
        prompt = body.logprobs          # echo + logprobs: the prompt's tokens get logprobs too (OpenAI)
    return body.logprobs, prompt


def _logit_bias(state: ServingState, body: CompletionRequest | ChatRequest) -> dict[int, float] | None:
    if not body.logit_bias:
        return None
    out = {}
    for key, bias in body.logit_bias.items():
        try:
            token = int(key)
        except ValueError:
            raise APIError(400, f"logit_bias keys are token ids, got {key!r}", param="logit_bias") from None
        if not 0 <= token < state.vocab_size:
            raise APIError(400, f"logit_bias token {token} is outside the vocabulary", param="logit_bias")
        out[token] = bias
    return out


def sampling_params(state: ServingState, body: CompletionRequest | ChatRequest, max_tokens: int,
                    structured: Any = None) -> SamplingParams:
    logprobs, prompt_logprobs = _logprob_counts(body)
    try:
        params = SamplingParams(
            max_tokens=max_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
            seed=body.seed, stop=body.stop_list(), stop_token_ids=tuple(body.stop_token_ids or ()),
            ignore_eos=body.ignore_eos, presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty, repetition_penalty=body.repetition_penalty,
            logit_bias=_logit_bias(state, body), min_tokens=body.min_tokens, min_p=body.min_p,
            logprobs=logprobs, prompt_logprobs=prompt_logprobs, structured_outputs=structured, n=body.n)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    eos = list(getattr(state.loaded, "eos_token_ids", []) or [])
    if not params.ignore_eos and len(eos) > 1:   # the model's other end tokens stop it too
        params = replace(params, stop_token_ids=params.stop_token_ids + tuple(eos[1:]))
    return params


def build_requests(state: ServingState, body: CompletionRequest | ChatRequest, headers: Mapping[str, str],
                   structured: Any = None) -> list[Request]:
    """One Request per (prompt, sample), in choice-index order: prompt i's sample j is choice i * n + j."""
    arrival = time.monotonic()    # TTFT counts from here: tokenising and queueing are part of it
    check_model(state, body.model)
    if not 1 <= body.n <= _MAX_N:
        raise APIError(400, f"n must be in [1, {_MAX_N}], got {body.n}", param="n")
    prompts = [chat_prompt_ids(state, body)] if isinstance(body, ChatRequest) else completion_prompts(state, body)
    if len(prompts) * body.n > _MAX_N:
        raise APIError(400, f"{len(prompts)} prompts x n={body.n} exceeds {_MAX_N} choices per request", param="n")
    slo_class, slo, utility = resolve_slo(state, body, headers)
    prefix = "chatcmpl" if isinstance(body, ChatRequest) else "cmpl"
    base_id = f"{prefix}-{uuid.uuid4().hex}"
    if body.user or getattr(body, "safety_identifier", None):
        log.info("request %s from user %r", base_id, body.user or body.safety_identifier)
    eos = list(getattr(state.loaded, "eos_token_ids", []) or [])
    reqs = []
    for ids in prompts:
        params = sampling_params(state, body, _max_tokens(state, body, len(ids)), structured)
        for j in range(body.n):
            own = params if params.seed is None or j == 0 else replace(params, seed=params.seed + j)
            rid = base_id if len(prompts) * body.n == 1 else f"{base_id}-{len(reqs)}"
            reqs.append(Request(rid, list(ids), own, arrival, slo=slo, slo_class=slo_class, utility=utility,
                                priority=body.priority, eos_token_id=eos[0] if eos else None))
    return reqs
