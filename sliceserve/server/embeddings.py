"""`POST /v1/embeddings` (OpenAI's shape): each input is one prefill-only request through the same scheduler,
in the `embedding` SLO class unless the body or headers say otherwise; its vector is the served model's pooled
last hidden states (sliceserve.model.pooling). Also the submission helper the Ollama embed routes share.
"""
from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any, Literal, Mapping

import numpy as np
from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sliceserve.request import Request, SamplingParams
from sliceserve.server.intake import read_body
from sliceserve.server.protocol import APIError, SLOBody
from sliceserve.server.requests import check_model, resolve_slo
from sliceserve.server.serving import request_failure, slo_report, submit_one, wait_disconnect
from sliceserve.server.state import ServingState

EMBEDDING_CLASS = "embedding"


class EmbeddingSLOFields(BaseModel):
    """The SLO extensions every route takes (as in sliceserve.server.protocol), for `resolve_slo`."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    slo: SLOBody | None = None
    slo_class: str | None = None
    utility: float | None = Field(default=None, gt=0)
    priority: int = 0


# What an embedding input may be (OpenAI's and Ollama's shapes alike). Token ids are strict integers: JSON
# `true` is not token 1 (lax validation would coerce it; schemathesis sent `[[true], [false]]`).
EmbeddingInput = str | list[str] | list[StrictInt] | list[list[StrictInt]]


class EmbeddingRequest(EmbeddingSLOFields):
    # Unknown fields are refused (400 naming them): this endpoint is new, no client relies on sending extras.
    model: str | None = None
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)


def embeddings_supported(state: ServingState) -> None:
    backend = getattr(state.loaded, "backend", "torch")
    if backend != "torch":
        raise APIError(501, f"embeddings need the torch backend (its runner pools hidden states); this server runs "
                       f"{backend}", type="not_implemented", code="embeddings_unsupported")


def embedding_dim(state: ServingState) -> int | None:
    arch = getattr(getattr(state.loaded.runner, "model", None), "arch", None)
    return getattr(arch, "hidden_size", None)


def check_dimensions(state: ServingState, dimensions: int | None) -> None:
    """`dimensions` is honoured only when it is the model's own width: truncating a vector the model was not
    trained to truncate (Matryoshka) would silently degrade it."""
    dim = embedding_dim(state)
    if dimensions is not None and dimensions != dim:
        raise APIError(400, f"dimensions={dimensions} is not supported: this model's embeddings have {dim} "
                       "dimensions (omit the field)", param="dimensions")


def input_ids(state: ServingState, inputs: str | list[str] | list[int] | list[list[int]],
              param: str = "input", truncate: bool = False) -> list[list[int]]:
    """Token ids of every input: a string, a list of strings, token ids, or a list of token-id lists.
    `truncate` (Ollama's default): an input longer than the context keeps its first tokens instead of a 400."""
    if isinstance(inputs, str):
        inputs = [inputs]
    elif inputs and all(isinstance(t, int) for t in inputs):
        inputs = [inputs]
    if not inputs:
        raise APIError(400, "input is empty", param=param)
    vocab, limit = state.vocab_size, state.max_model_len
    out = []
    for i, item in enumerate(inputs):
        ids = list(state.tokenizer.encode(item)) if isinstance(item, str) else list(item)
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"input[{i}]: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                           param=param)
        if not ids:
            raise APIError(400, f"input[{i}] is empty", param=param)
        if truncate:
            ids = ids[:limit - 1]
        if len(ids) >= limit:
            raise APIError(400, f"input[{i}] has {len(ids)} tokens but max_model_len is {limit}; shorten it",
                           param=param, code="context_length_exceeded")
        out.append(ids)
    return out


def embed_requests(state: ServingState, ids: list[list[int]], fields: EmbeddingSLOFields,
                   headers: Mapping[str, str]) -> list[Request]:
    """One prefill-only Request per input, in the `embedding` class unless the body names another."""
    arrival = time.monotonic()
    if fields.slo_class is None and EMBEDDING_CLASS in state.classes:
        fields = fields.model_copy(update={"slo_class": EMBEDDING_CLASS})
    slo_class, slo, utility = resolve_slo(state, fields, headers)
    if slo.tpot_s is not None:
        raise APIError(400, "an embedding produces no tokens after its vector: a tpot bound cannot apply; "
                       "give ttft_ms or e2e_ms", param="slo")
    base = uuid.uuid4().hex
    return [Request(f"embd-{base}-{i}", p, SamplingParams(max_tokens=1), arrival, slo=slo, slo_class=slo_class,
                    utility=utility, priority=fields.priority, embed=True) for i, p in enumerate(ids)]


async def _one(state: ServingState, req: Request) -> Request:
    stream = await submit_one(state, req)
    async for ev in stream:
        if ev.finished:
            failure = request_failure(ev)
            if failure is not None:
                raise failure
            if req.embedding is None:
                raise APIError(500, "the executor returned no embedding", type="InternalServerError")
            return req
    raise AssertionError("stream ended without a final event")


async def run_embeddings(state: ServingState, reqs: list[Request], http: HTTPRequest) -> list[Request] | None:
    """Submit every request and wait for all vectors; None if the client went away (all aborted). The first
    failure (rejection, queue timeout, error) aborts the rest and is raised."""
    jobs = [asyncio.ensure_future(_one(state, r)) for r in reqs]
    watch = asyncio.ensure_future(wait_disconnect(http))
    everything = asyncio.gather(*jobs)
    gone = True
    try:
        await asyncio.wait({everything, watch}, return_when=asyncio.FIRST_COMPLETED)
        gone = not everything.done()
    finally:
        watch.cancel()
        if gone or everything.exception() is not None:   # client gone, or one failed: free the others' KV
            for job, req in zip(jobs, reqs):
                job.cancel()
                state.engine.abort(req.req_id)
    if gone:
        return None
    return everything.result()   # raises the first failure


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":   # little-endian float32, as OpenAI's API sends it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(http: HTTPRequest) -> Response:
    state: ServingState = http.app.state.serving
    body: EmbeddingRequest = await read_body(http, EmbeddingRequest)
    check_model(state, body.model)
    embeddings_supported(state)
    check_dimensions(state, body.dimensions)
    ids = await asyncio.to_thread(input_ids, state, body.input)   # tokenising off the event loop
    reqs = embed_requests(state, ids, body, http.headers)
    done = await run_embeddings(state, reqs, http)
    if done is None:
        return Response(status_code=499)
    n = sum(r.num_prompt_tokens for r in done)
    data: list[dict[str, Any]] = [{"object": "embedding", "index": i, "embedding": _encode(r.embedding, body.encoding_format),
                                   "slo_report": slo_report(r)} for i, r in enumerate(done)]
    return JSONResponse({"object": "list", "data": data, "model": state.model_name,
                         "usage": {"prompt_tokens": n, "total_tokens": n}})
