"""One request's stream of events from the engine thread to the event loop (`AsyncEngine`).

The engine thread puts `StreamEvent`s on the stream's `asyncio.Queue` through `call_soon_threadsafe`; the
HTTP handler iterates the stream. The last event has `finished=True` and carries the finish reason.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sliceserve.request import FinishReason, Request


@dataclass(slots=True)
class StreamEvent:
    new_token_ids: list[int]
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None
    retry_after_s: float | None = None    # a refusal's hint (queue timeout): when to try again


@dataclass(slots=True)
class RequestStream:
    """Async iterator over one request's events; the last one has `finished=True`."""

    request: Request
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    num_sent: int = 0          # tokens already forwarded (engine thread only)
    done: bool = False

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> StreamEvent:
        if self.done:
            raise StopAsyncIteration
        event = await self.queue.get()
        # Coalesce what piled up while the consumer was busy: fewer, larger SSE chunks under load.
        while not event.finished and not self.queue.empty():
            more = self.queue.get_nowait()
            event = StreamEvent(event.new_token_ids + more.new_token_ids, more.finished,
                                more.finish_reason, more.error, more.retry_after_s)
        self.done = event.finished
        return event
