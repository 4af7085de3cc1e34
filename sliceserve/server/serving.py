"""Run one admitted request and answer it: a JSON body, or SSE chunks ending with `data: [DONE]`.

A client that goes away aborts its request: streaming responses are cancelled by Starlette when the
connection drops (the generator's `finally` aborts); non-streaming ones poll for the disconnect.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, AsyncIterator

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sliceserve.core.scheduler import SLO_REFUSAL
from sliceserve.engine.async_engine import Rejection, RequestStream, StreamEvent
from sliceserve.metrics.request_metrics import request_metrics
from sliceserve.request import FinishReason, Request
from sliceserve.server.detok import Detokenizer
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.state import ServingState

_DISCONNECT_POLL_S = 0.05
_REJECT_STATUS = {"invalid": 400, "overloaded": 429, "queue_full": 503, "unavailable": 503}


def rejection_error(rej: Rejection) -> APIError:
    headers = {}
    if rej.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(rej.retry_after_s)))
    status = _REJECT_STATUS.get(rej.kind, 503)
    kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "service_unavailable")
    return APIError(status, rej.message, type=kind, code=rej.kind, headers=headers)


def slo_report(req: Request) -> dict[str, Any]:
    m = request_metrics(req)
    ms = lambda v: None if v is None else round(v * 1e3, 3)  # noqa: E731
    slo = req.slo
    violations = [name for name, ok, bound in (("ttft", m.ttft_met, slo.ttft_s), ("tpot", m.tpot_met, slo.tpot_s),
                                               ("e2e", m.e2e_met, slo.e2e_s)) if bound is not None and not ok]
    return {"slo_class": req.slo_class, "slo": {"ttft_ms": ms(slo.ttft_s), "tpot_ms": ms(slo.tpot_s),
                                                "e2e_ms": ms(slo.e2e_s)},
            "ttft_ms": ms(m.ttft_s), "tpot_ms": ms(m.tpot_s), "e2e_ms": ms(m.e2e_s), "met": m.met,
            "violations": violations,
            # The latency model's admission-time predictions, beside the measured values above.
            "predicted_ttft_ms": ms(req.predicted_ttft_s), "predicted_tpot_ms": ms(req.predicted_tpot_s)}


def _usage(req: Request) -> dict[str, int]:
    n_out = req.num_output_tokens
    return {"prompt_tokens": req.num_prompt_tokens, "completion_tokens": n_out,
            "total_tokens": req.num_prompt_tokens + n_out}


def _finish_reason(ev: StreamEvent, detok: Detokenizer) -> str:
    if detok.stopped or ev.finish_reason is FinishReason.STOP:
        return "stop"
    return "length"


def _failure(ev: StreamEvent) -> APIError | None:
    if ev.finish_reason in (FinishReason.STOP, FinishReason.LENGTH):
        return None
    if ev.finish_reason is FinishReason.REJECTED and ev.error and ev.error.startswith(SLO_REFUSAL):
        # The policy refused it once its SLO could no longer be met (e.g. SLICE's slice_reject_lost).
        return APIError(429, ev.error, type="rate_limit_error", code="slo_infeasible", headers={"Retry-After": "1"})
    if ev.finish_reason is FinishReason.REJECTED:   # timed out in the queue (max_queue_time_s): try later
        retry = str(max(1, math.ceil(ev.retry_after_s or 1.0)))
        return APIError(503, ev.error or "not scheduled in time", type="service_unavailable", code="queue_timeout",
                        headers={"Retry-After": retry})
    return APIError(500, ev.error or f"request ended: {ev.finish_reason.value if ev.finish_reason else '?'}",
                    type="InternalServerError", code=ev.finish_reason.value if ev.finish_reason else None)


async def submit(state: ServingState, req: Request) -> RequestStream:
    result = await state.engine.add_request(req)
    if isinstance(result, Rejection):
        state.metrics.on_reject(result.kind)
        err = rejection_error(result)
        if state.activity is not None:   # the dashboard lists the last refusals with their reasons
            state.activity.on_reject(req, result.kind, err.status, result.message, state.engine.clock())
        raise err
    return result


async def _collect(stream: RequestStream, detok: Detokenizer) -> tuple[StreamEvent, str]:
    parts = []
    async for ev in stream:
        parts.append(detok.push(ev.new_token_ids, final=ev.finished))
        if ev.finished:
            return ev, "".join(parts)
    raise AssertionError("stream ended without a final event")


async def _wait_disconnect(http: HTTPRequest) -> None:
    while not await http.is_disconnected():
        await asyncio.sleep(_DISCONNECT_POLL_S)


async def respond_full(state: ServingState, body: CompletionRequest | ChatRequest, req: Request,
                       stream: RequestStream, http: HTTPRequest) -> Response:
    detok = Detokenizer(state.tokenizer, req.sampling_params.stop)
    collect = asyncio.ensure_future(_collect(stream, detok))
    watch = asyncio.ensure_future(_wait_disconnect(http))
    try:
        await asyncio.wait({collect, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not collect.done():   # client gone (or we were cancelled): free its KV now
            collect.cancel()
            state.engine.abort(req.req_id)
    if not collect.done() or collect.cancelled():
        return Response(status_code=499)
    ev, text = collect.result()
    failure = _failure(ev)
    if failure is not None:
        raise failure
    reason = _finish_reason(ev, detok)
    if isinstance(body, ChatRequest):
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                  "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        obj = "text_completion"
    return JSONResponse({"id": req.req_id, "object": obj, "created": int(time.time()), "model": state.model_name,
                         "choices": [choice], "usage": _usage(req), "slo_report": slo_report(req)})


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _first_event(state: ServingState, req: Request, stream: RequestStream,
                       http: HTTPRequest) -> StreamEvent | None:
    """The stream's first event, or None if the client left first (its request is then aborted)."""
    first = asyncio.ensure_future(stream.__anext__())
    watch = asyncio.ensure_future(_wait_disconnect(http))
    try:
        await asyncio.wait({first, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not first.done():
            first.cancel()
            state.engine.abort(req.req_id)
    return first.result() if first.done() and not first.cancelled() else None


async def _prepend(first: StreamEvent, stream: RequestStream) -> AsyncIterator[StreamEvent]:
    yield first
    if not first.finished:
        async for ev in stream:
            yield ev


async def respond_stream(state: ServingState, body: CompletionRequest | ChatRequest, req: Request,
                         stream: RequestStream, http: HTTPRequest) -> Response:
    """SSE once the first event is in: a request refused before its first token (queue timeout) still gets
    a proper HTTP status, since no byte of the 200 was sent yet."""
    first = await _first_event(state, req, stream, http)
    if first is None:
        return Response(status_code=499)
    failure = _failure(first) if first.finished else None
    if failure is not None and not first.new_token_ids:
        raise failure
    return StreamingResponse(_events(state, body, req, _prepend(first, stream)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(state: ServingState, body: CompletionRequest | ChatRequest, req: Request,
                  stream: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
    chat = isinstance(body, ChatRequest)
    base = {"id": req.req_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": state.model_name}

    def chunk(text: str | None, reason: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return {**base, "choices": [choice]}

    detok = Detokenizer(state.tokenizer, req.sampling_params.stop)
    finished = False
    try:
        if chat:
            yield _sse(chunk(None, None, first=True))
        async for ev in stream:
            text = detok.push(ev.new_token_ids, final=ev.finished)
            if not ev.finished:
                if text:
                    yield _sse(chunk(text, None))
                continue
            finished = True
            failure = _failure(ev)
            if failure is not None:
                if text:
                    yield _sse(chunk(text, None))
                yield _sse(failure.body())
                break
            last = chunk(text, _finish_reason(ev, detok))
            report = slo_report(req)
            if body.include_usage:
                yield _sse({**last, "usage": None})
                yield _sse({**base, "choices": [], "usage": _usage(req), "slo_report": report})
            else:
                yield _sse({**last, "slo_report": report})
        yield "data: [DONE]\n\n"
    finally:
        if not finished:   # the client went away (Starlette cancelled us): free the request's KV now
            state.engine.abort(req.req_id)


# Shared with the Ollama and embeddings routes (sliceserve.server.ollama, sliceserve.server.embeddings).
request_failure = _failure
wait_disconnect = _wait_disconnect
