"""Run a body's admitted requests (one per prompt and sample) and answer: a JSON body with one choice per
request, or SSE chunks (each naming its choice index) ending with `data: [DONE]`.

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

from sliceserve.core.scheduler import is_slo_refusal
from sliceserve.engine.async_engine import Rejection, RequestStream, StreamEvent
from sliceserve.metrics.request_metrics import request_metrics
from sliceserve.request import FinishReason, Request
from sliceserve.server.choices import Choice
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.state import ServingState

_DISCONNECT_POLL_S = 0.05
_SIBLING_POLL_S = 0.005
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


def _usage(reqs: list[Request]) -> dict[str, Any]:
    """Each distinct prompt counts once (n samples share it, as OpenAI counts); cached_tokens: prompt tokens
    the prefix cache supplied when each prompt's first request started."""
    leaders = _leaders(reqs)
    n_prompt = sum(r.num_prompt_tokens for r in leaders)
    n_out = sum(r.num_output_tokens for r in reqs)
    return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out,
            "prompt_tokens_details": {"cached_tokens": sum(r.num_cached_tokens or 0 for r in leaders)}}


def _leaders(reqs: list[Request]) -> list[Request]:
    """The first request of each prompt (requests come grouped by prompt, n per prompt)."""
    n = reqs[0].sampling_params.n
    return reqs[::n]


def _failure(ev: StreamEvent) -> APIError | None:
    if ev.finish_reason in (FinishReason.STOP, FinishReason.LENGTH):
        return None
    if is_slo_refusal(ev.finish_reason, ev.error):
        # The policy refused it once its SLO could no longer be met (e.g. SLICE's slice_reject_lost).
        return APIError(429, ev.error, type="rate_limit_error", code="slo_infeasible", headers={"Retry-After": "1"})
    if ev.finish_reason is FinishReason.REJECTED:   # timed out in the queue (max_queue_time_s): try later
        retry = str(max(1, math.ceil(ev.retry_after_s or 1.0)))
        return APIError(503, ev.error or "not scheduled in time", type="service_unavailable", code="queue_timeout",
                        headers={"Retry-After": retry})
    return APIError(500, ev.error or f"request ended: {ev.finish_reason.value if ev.finish_reason else '?'}",
                    type="InternalServerError", code=ev.finish_reason.value if ev.finish_reason else None)


async def submit_one(state: ServingState, req: Request) -> RequestStream:
    result = await state.engine.add_request(req)
    if isinstance(result, Rejection):
        state.metrics.on_reject(result.kind)
        err = rejection_error(result)
        if state.activity is not None:   # the dashboard lists the last refusals with their reasons
            state.activity.on_reject(req, result.kind, err.status, result.message, state.engine.clock())
        raise err
    return result


async def _prompt_cached(state: ServingState, leader: Request) -> None:
    """Wait until the leader's prompt is in the prefix cache (its prefill is done) or it ended."""
    if not state.engine.core.scheduler.prefix_caching or leader.sampling_params.prompt_logprobs is not None:
        return
    while leader.num_computed_tokens < leader.num_prompt_tokens - 1 and not leader.status.is_finished:
        await asyncio.sleep(_SIBLING_POLL_S)


async def submit(state: ServingState, reqs: list[Request]) -> list[RequestStream]:
    """Admit every request or none. A prompt's first request goes first; its n - 1 siblings follow once
    its prompt is prefilled, so they find the prompt's KV blocks in the prefix cache and share them."""
    streams: list[RequestStream] = []
    n = reqs[0].sampling_params.n
    try:
        for leader in reqs[::n]:
            streams.append(await submit_one(state, leader))
        for g, leader in enumerate(reqs[::n]):
            if n > 1:
                await _prompt_cached(state, leader)
            for sib in reqs[g * n + 1:(g + 1) * n]:
                streams.append(await submit_one(state, sib))
    except BaseException:
        for st in streams:
            state.engine.abort(st.request.req_id)
        raise
    order = {r.req_id: i for i, r in enumerate(reqs)}
    return sorted(streams, key=lambda st: order[st.request.req_id])


async def _collect(stream: RequestStream, choice: Choice) -> StreamEvent:
    async for ev in stream:
        choice.push_all(ev)
        if ev.finished:
            return ev
    raise AssertionError("stream ended without a final event")


async def _wait_disconnect(http: HTTPRequest) -> None:
    while not await http.is_disconnected():
        await asyncio.sleep(_DISCONNECT_POLL_S)


def _abort_all(state: ServingState, reqs: list[Request]) -> None:
    for r in reqs:
        state.engine.abort(r.req_id)


def _choices(state: ServingState, body: CompletionRequest | ChatRequest, reqs: list[Request]) -> list[Choice]:
    return [Choice(state.tokenizer, body, r, i) for i, r in enumerate(reqs)]


def _envelope(state: ServingState, body: CompletionRequest | ChatRequest, reqs: list[Request], chunk: bool
              ) -> dict[str, Any]:
    chat = isinstance(body, ChatRequest)
    obj = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    out = {"id": reqs[0].req_id.rsplit("-", 1)[0] if len(reqs) > 1 else reqs[0].req_id, "object": obj,
           "created": int(time.time()), "model": state.model_name}
    if chat and body.service_tier is not None:
        out["service_tier"] = "default"
    return out


def _reports(reqs: list[Request]) -> dict[str, Any]:
    out: dict[str, Any] = {"slo_report": slo_report(reqs[0])}
    if len(reqs) > 1:
        out["slo_reports"] = [slo_report(r) for r in reqs]
    return out


async def respond_full(state: ServingState, body: CompletionRequest | ChatRequest, reqs: list[Request],
                       streams: list[RequestStream], http: HTTPRequest) -> Response:
    choices = _choices(state, body, reqs)
    collect = asyncio.ensure_future(asyncio.gather(*(_collect(st, c) for st, c in zip(streams, choices))))
    watch = asyncio.ensure_future(_wait_disconnect(http))
    try:
        await asyncio.wait({collect, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not collect.done():   # client gone (or we were cancelled): free the KV now
            collect.cancel()
            _abort_all(state, reqs)
    if not collect.done() or collect.cancelled():
        return Response(status_code=499)
    for ev in collect.result():
        failure = _failure(ev)
        if failure is not None:
            raise failure
    return JSONResponse({**_envelope(state, body, reqs, False), "choices": [c.final() for c in choices],
                         "usage": _usage(reqs), **_reports(reqs)})


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _first_event(state: ServingState, reqs: list[Request], events: AsyncIterator[tuple[int, StreamEvent]],
                       http: HTTPRequest) -> tuple[int, StreamEvent] | None:
    """The first (choice, event), or None if the client left first (its requests are then aborted)."""
    first = asyncio.ensure_future(events.__anext__())
    watch = asyncio.ensure_future(_wait_disconnect(http))
    try:
        await asyncio.wait({first, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not first.done():
            first.cancel()
            _abort_all(state, reqs)
    return first.result() if first.done() and not first.cancelled() else None


async def _prepend(first: tuple[int, StreamEvent],
                   events: AsyncIterator[tuple[int, StreamEvent]]) -> AsyncIterator[tuple[int, StreamEvent]]:
    yield first
    async for item in events:
        yield item


async def respond_stream(state: ServingState, body: CompletionRequest | ChatRequest, reqs: list[Request],
                         streams: list[RequestStream], http: HTTPRequest) -> Response:
    """SSE once the first event is in: a request refused before its first token (queue timeout, SLO refusal)
    still gets a proper HTTP status, since no byte of the 200 was sent yet."""
    events = _merged(streams)
    first = await _first_event(state, reqs, events, http)
    if first is None:
        return Response(status_code=499)
    _, ev = first
    failure = _failure(ev) if ev.finished else None
    if failure is not None and not ev.new_token_ids:
        _abort_all(state, reqs)   # the other choices of a refused request are not wanted
        raise failure
    return StreamingResponse(_events(state, body, reqs, _prepend(first, events)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _merged(streams: list[RequestStream]) -> AsyncIterator[tuple[int, StreamEvent]]:
    """Events of all streams as they come, tagged with their choice index."""
    if len(streams) == 1:
        async for ev in streams[0]:
            yield 0, ev
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, st: RequestStream) -> None:
        async for ev in st:
            await queue.put((i, ev))

    tasks = [asyncio.ensure_future(pump(i, st)) for i, st in enumerate(streams)]
    try:
        for _ in range(len(streams)):
            while True:
                i, ev = await queue.get()
                yield i, ev
                if ev.finished:
                    break
    finally:
        for t in tasks:
            t.cancel()


async def _events(state: ServingState, body: CompletionRequest | ChatRequest, reqs: list[Request],
                  events: AsyncIterator[tuple[int, StreamEvent]]) -> AsyncIterator[str]:
    base = _envelope(state, body, reqs, True)
    choices = _choices(state, body, reqs)
    started: set[int] = set()
    finished = 0
    try:
        if isinstance(body, ChatRequest):   # the role comes first, before any token (as OpenAI sends it)
            for c in choices:
                started.add(c.index)
                yield _sse({**base, "choices": [{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": None, "logprobs": None}]})
        async for i, ev in events:
            failure = _failure(ev) if ev.finished else None
            if failure is not None:
                finished = len(reqs)
                partial = choices[i].chunk(StreamEvent(ev.new_token_ids), first=i not in started)
                if partial is not None:   # what it generated before failing, then the error
                    yield _sse({**base, "choices": [partial]})
                yield _sse(failure.body())
                _abort_all(state, reqs)   # the other choices of a failed request are not wanted
                break
            choice = choices[i].chunk(ev, first=i not in started)
            started.add(i)
            finished += ev.finished
            if choice is None:
                continue
            extra = _reports([reqs[i]]) if ev.finished else {}
            if body.include_usage:
                extra["usage"] = None
            yield _sse({**base, "choices": [choice], **extra})
        if body.include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(reqs), **_reports(reqs)})
        yield "data: [DONE]\n\n"
    finally:
        if finished < len(reqs):   # the client went away (Starlette cancelled us): free the KV now
            _abort_all(state, reqs)


# Shared with the Ollama and embeddings routes (sliceserve.server.ollama, sliceserve.server.embeddings).
request_failure = _failure
wait_disconnect = _wait_disconnect
