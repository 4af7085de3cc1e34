"""Ollama's reply shapes: NDJSON chunks while streaming, a final message with its timings (nanoseconds, as
Ollama reports them) and, as an extension, the request's `slo_report`."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

from sliceserve.engine.async_engine import RequestStream
from sliceserve.request import FinishReason, Request
from sliceserve.server import tools
from sliceserve.server.detok import Detokenizer
from sliceserve.server.serving import request_failure, slo_report
from sliceserve.server.state import ServingState


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(seconds: float | None) -> int:
    return max(0, round((seconds or 0.0) * 1e9))


def timings(req: Request) -> dict[str, Any]:
    """Ollama's final-message timings from the request's own timestamps (the engine's monotonic clock).
    load_duration is 0: the model is loaded once at start-up and stays loaded (keep_alive has nothing to do).
    prompt_eval_duration: from the first iteration that computed the prompt to the first token (queueing is in
    total_duration only); eval_duration: first to last token."""
    times = req.token_times_s
    start = req.first_scheduled_s if req.first_scheduled_s is not None else req.arrival_s
    return {"total_duration": _ns(time.monotonic() - req.arrival_s), "load_duration": 0,
            "prompt_eval_count": req.num_prompt_tokens,
            "prompt_eval_duration": _ns(times[0] - start) if times else 0,
            "eval_count": req.num_output_tokens,
            "eval_duration": _ns(times[-1] - times[0]) if times else 0}


def done_reason(req: Request, detok: Detokenizer) -> str:
    return "stop" if detok.stopped or req.finish_reason is FinishReason.STOP else "length"


def ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI `tool_calls` (server/tools.py) as Ollama writes them: the function's arguments as an object."""
    return [{"function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}}
            for c in calls]


class Shape:
    """Chat (`message`) or generate (`response`, plus `context`: the conversation's token ids). In a chat that
    `offers_tools`, an answer that is tool calls comes as `message.tool_calls`."""

    def __init__(self, state: ServingState, chat: bool, offers_tools: bool = False) -> None:
        self.model, self.chat, self.offers_tools = state.model_name, chat, offers_tools

    def chunk(self, text: str, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        base = {"model": self.model, "created_at": created_at()}
        if self.chat:
            message = {"role": "assistant", "content": text, **({"tool_calls": ollama_calls(calls)} if calls else {})}
            return {**base, "message": message, "done": False}
        return {**base, "response": text, "done": False}

    def final(self, req: Request, text: str, detok: Detokenizer,
              calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out = {**self.chunk(text, calls), "done": True, "done_reason": done_reason(req, detok)}
        if not self.chat:
            out["context"] = list(req.prompt_token_ids) + list(req.output_token_ids)
        return {**out, **timings(req), "slo_report": slo_report(req)}

    def answer(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """A whole answer's (content, OpenAI tool calls): calls only where tools were offered."""
        if not self.offers_tools:
            return text, []
        content, calls = tools.parse(text)
        return content or "", calls


async def collect(state: ServingState, req: Request, stream: RequestStream) -> tuple[Request, str, Detokenizer]:
    """Every token of a request; raises its failure (queue timeout, executor error) as an APIError."""
    detok = Detokenizer(state.tokenizer, req.sampling_params.stop)
    parts = []
    async for ev in stream:
        parts.append(detok.push(ev.new_token_ids, final=ev.finished))
        if ev.finished:
            failure = request_failure(ev)
            if failure is not None:
                raise failure
            return req, "".join(parts), detok
    raise AssertionError("stream ended without a final event")


def ndjson(state: ServingState, shape: Shape, req: Request, stream: RequestStream) -> StreamingResponse:
    return StreamingResponse(_lines(state, shape, req, stream), media_type="application/x-ndjson")


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


async def _lines(state: ServingState, shape: Shape, req: Request, stream: RequestStream) -> AsyncIterator[str]:
    detok = Detokenizer(state.tokenizer, req.sampling_params.stop)
    calls = tools.ToolStream() if shape.offers_tools else None   # content passes; each call once its tag closes
    finished = False
    try:
        async for ev in stream:
            text = detok.push(ev.new_token_ids, final=ev.finished)
            new_calls: list[dict[str, Any]] = []
            if calls is not None:
                text, new_calls = calls.push(text, final=ev.finished)
            if not ev.finished:
                if text or new_calls:
                    yield _line(shape.chunk(text, new_calls))
                continue
            finished = True
            failure = request_failure(ev)
            if failure is not None:   # Ollama's in-stream error: one line with `error`, then the stream ends
                if text:
                    yield _line(shape.chunk(text))
                yield _line({"error": failure.message})
                break
            yield _line(shape.final(req, text, detok, new_calls))
    finally:
        if not finished:   # the client went away (Starlette cancelled us): free the request's KV now
            state.engine.abort(req.req_id)
