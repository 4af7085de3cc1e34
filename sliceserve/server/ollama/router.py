"""The Ollama routes. Generation is translated into the OpenAI bodies the rest of the server already
validates (sliceserve.server.requests.build_requests), so sampling, SLOs (body fields or x-slo-* headers),
admission and the scheduler are the same; errors come back in Ollama's `{"error": "..."}` shape."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, Callable

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from sliceserve.server import tools
from sliceserve.server.embeddings import (check_dimensions, embed_requests, embeddings_supported, input_ids,
                                          run_embeddings)
from sliceserve.server.ollama import models
from sliceserve.server.ollama.protocol import (ChatBody, EmbedBody, GenerateBody, LegacyEmbeddingsBody, ShowBody,
                                               refuse_embed_options, sampling_fields)
from sliceserve.server.ollama.replies import Shape, collect, created_at, ndjson
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest, validation_error
from sliceserve.server.intake import read_body
from sliceserve.server.requests import build_requests, chat_prompt_ids
from sliceserve.server.serving import submit_one, wait_disconnect
from sliceserve.server.state import ServingState
from sliceserve.server.structured import compile_spec, spec_for


class OllamaRoute(APIRoute):
    """Answers APIError as Ollama does: `{"error": "message"}` with the status (the `ollama` client reads it)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: HTTPRequest) -> Response:
            try:
                return await handler(request)
            except APIError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
        return route


router = APIRouter(prefix="/api", route_class=OllamaRoute)


def _state(http: HTTPRequest) -> ServingState:
    return http.app.state.serving


def _limits(state: ServingState, options: dict[str, Any], num_prompt: int) -> int:
    """max_tokens from num_predict (absent: default_max_tokens; -1 or -2: up to the context) within num_ctx."""
    limit = state.max_model_len
    num_ctx = options.get("num_ctx")
    if num_ctx is not None:
        if not 0 < num_ctx <= limit:
            raise APIError(400, f"num_ctx {num_ctx} must be between 1 and this server's max_model_len {limit}",
                           param="options.num_ctx")
        limit = num_ctx
    if num_prompt >= limit:
        raise APIError(400, f"prompt has {num_prompt} tokens but the context holds {limit}; shorten it",
                       param="options.num_ctx" if num_ctx else "prompt", code="context_length_exceeded")
    predict = options.get("num_predict")
    if predict is None:
        return min(state.settings.default_max_tokens, limit - num_prompt)
    if predict in (-1, -2):
        return limit - num_prompt
    if predict <= 0:
        raise APIError(400, f"num_predict must be positive, -1 or -2, got {predict}", param="options.num_predict")
    if num_prompt + predict > limit:
        raise APIError(400, f"prompt ({num_prompt} tokens) plus num_predict ({predict}) exceeds the context "
                       f"({limit})", param="options.num_predict", code="context_length_exceeded")
    return predict


def _penalty_window(state: ServingState, options: dict[str, Any]) -> int:
    """repeat_last_n as the penalties' window in tokens (`SamplingParams.penalty_last_n`): -1 is the whole
    context (num_ctx), 0 turns the penalties off."""
    n = options["repeat_last_n"]
    if n == -1:
        return options.get("num_ctx") or state.max_model_len
    if n < 0:
        raise APIError(400, f"repeat_last_n must be -1 (the context), 0 (off) or a token count, got {n}",
                       param="options.repeat_last_n")
    return n


def _openai(kind: type, fields: dict[str, Any]) -> Any:
    try:
        return kind.model_validate(fields)
    except ValidationError as exc:
        err = validation_error(exc)
        raise APIError(400, f"options: {err.message}", param=f"options.{err.param}") from None


def _common(state: ServingState, body: ChatBody | GenerateBody) -> dict[str, Any]:
    models.check(state, body.model)
    body.refuse_unsupported()
    options = sampling_fields(body.options)
    out = {k: options[k] for k in ("temperature", "top_k", "top_p", "min_p", "seed", "stop", "presence_penalty",
                                   "frequency_penalty") if k in options}
    if not options["repeat_penalty"] > 0:
        raise APIError(400, f"option 'repeat_penalty' must be > 0 (1 is off), got {options['repeat_penalty']}",
                       param="options.repeat_penalty")
    out["repetition_penalty"] = options["repeat_penalty"]
    out.update(model=state.model_name, slo=body.slo.model_dump(exclude_none=True) if body.slo else None, slo_class=body.slo_class,
               utility=body.utility, priority=body.priority, response_format=body.response_format())
    return {**out, "_options": options}


# The OpenAI body the rest of the server validates, and the penalties' window (`_penalty_window`), which that
# body has no field for.
Built = tuple[ChatRequest | CompletionRequest, int]


def _chat_request(state: ServingState, body: ChatBody) -> Built:
    fields = _common(state, body)
    options = fields.pop("_options")
    offered = {"tools": body.tools} if body.tools else {}
    oa = _openai(ChatRequest, {**fields, **offered, "messages": body.openai_messages()})
    oa = oa.model_copy(update={"max_tokens": _limits(state, options, len(chat_prompt_ids(state, oa)))})
    return oa, _penalty_window(state, options)


def _generate_request(state: ServingState, body: GenerateBody) -> Built:
    fields = _common(state, body)
    options = fields.pop("_options")
    if body.raw:
        ids = list(state.tokenizer.encode(body.prompt)) if body.prompt else []
    else:   # the model's chat template, as Ollama applies the model's template unless raw
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
                   [{"role": "user", "content": body.prompt}]
        ids = chat_prompt_ids(state, _openai(ChatRequest, {"messages": messages}))
    ids = list(body.context or []) + ids
    oa = _openai(CompletionRequest, {**fields, "prompt": ids})
    oa = oa.model_copy(update={"max_tokens": _limits(state, options, len(ids))})
    return oa, _penalty_window(state, options)


async def _answer(http: HTTPRequest, body: ChatBody | GenerateBody, built: Built) -> Response:
    state = _state(http)
    oa, window = built
    spec = spec_for(oa)   # `format` or `tools`: the grammar the OpenAI routes constrain answers by
    await compile_spec(spec, state.tokenizer, param="format" if body.format else "tools")
    [req] = await asyncio.to_thread(build_requests, state, oa, http.headers, spec)   # tokenising off the event loop
    # The penalties count as llama.cpp's do: the last repeat_last_n tokens of prompt and output.
    req.sampling_params = replace(req.sampling_params, penalty_last_n=window)
    stream = await submit_one(state, req)
    shape = Shape(state, chat=isinstance(body, ChatBody),
                  offers_tools=isinstance(oa, ChatRequest) and tools.active(oa))
    if body.stream:
        return ndjson(state, shape, req, stream)
    job = asyncio.ensure_future(collect(state, req, stream))
    watch = asyncio.ensure_future(wait_disconnect(http))
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not job.done():   # client gone (or we were cancelled): free its KV now
            job.cancel()
            state.engine.abort(req.req_id)
    if not job.done() or job.cancelled():
        return Response(status_code=499)
    _, text, detok = job.result()
    content, calls = shape.answer(text)
    return JSONResponse(shape.final(req, content, detok, calls))


@router.post("/chat")
async def chat(http: HTTPRequest) -> Response:
    body: ChatBody = await read_body(http, ChatBody)
    return await _answer(http, body, await asyncio.to_thread(_chat_request, _state(http), body))


@router.post("/generate")
async def generate(http: HTTPRequest) -> Response:
    body: GenerateBody = await read_body(http, GenerateBody)
    state = _state(http)
    if not body.prompt and not body.context:
        # Ollama's "load the model" request: it is loaded already (and stays loaded). Its fields are still
        # checked: nothing sent is accepted and dropped.
        models.check(state, body.model)
        body.refuse_unsupported()
        sampling_fields(body.options)
        return JSONResponse({"model": state.model_name, "created_at": created_at(), "response": "", "done": True,
                             "done_reason": "load"})
    return await _answer(http, body, await asyncio.to_thread(_generate_request, state, body))


async def _embed(http: HTTPRequest, body: EmbedBody | LegacyEmbeddingsBody, inputs: Any, truncate: bool):
    state = _state(http)
    models.check(state, body.model)
    embeddings_supported(state)
    refuse_embed_options(body.options)
    ids = await asyncio.to_thread(input_ids, state, inputs, truncate=truncate)
    reqs = embed_requests(state, ids, body, http.headers)
    return await run_embeddings(state, reqs, http)


@router.post("/embed")
async def embed(http: HTTPRequest) -> Response:
    start = time.monotonic()
    body: EmbedBody = await read_body(http, EmbedBody)
    check_dimensions(_state(http), body.dimensions)
    done = await _embed(http, body, body.input, body.truncate)
    if done is None:
        return Response(status_code=499)
    return JSONResponse({"model": _state(http).model_name, "embeddings": [r.embedding for r in done],
                         "total_duration": round((time.monotonic() - start) * 1e9), "load_duration": 0,
                         "prompt_eval_count": sum(r.num_prompt_tokens for r in done)})


@router.post("/embeddings")
async def embeddings_legacy(http: HTTPRequest) -> Response:
    body: LegacyEmbeddingsBody = await read_body(http, LegacyEmbeddingsBody)
    if not body.prompt:
        # Ollama answers an empty prompt with an empty vector; the rest of the body is still checked (a
        # wrong model or an option sent is refused, not dropped).
        state = _state(http)
        models.check(state, body.model)
        refuse_embed_options(body.options)
        return JSONResponse({"embedding": []})
    done = await _embed(http, body, body.prompt, truncate=False)
    if done is None:
        return Response(status_code=499)
    return JSONResponse({"embedding": done[0].embedding})


@router.get("/tags")
async def tags(http: HTTPRequest) -> dict[str, Any]:
    return {"models": [models.entry(_state(http))]}


@router.get("/ps")
async def ps(http: HTTPRequest) -> dict[str, Any]:
    return {"models": [models.running(_state(http))]}


@router.post("/show")
async def show(http: HTTPRequest) -> dict[str, Any]:
    body: ShowBody = await read_body(http, ShowBody)
    state = _state(http)
    if not (body.model or body.name):
        raise APIError(400, "model is required", param="model")
    models.check(state, body.model or body.name)
    return models.show(state)


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": models.OLLAMA_API_VERSION}
