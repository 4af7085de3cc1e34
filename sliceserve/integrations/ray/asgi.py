"""Drive the single-box FastAPI app in-process over ASGI, so a Ray replica reuses the whole HTTP layer.

A replica receives a forwarded request as plain data (`ForwardedRequest`) and yields the app's response as
plain data: first `("start", status, headers)`, then `("body", bytes)` chunks. Streaming (SSE) responses
therefore stream through Ray unchanged. If the caller goes away (Ray cancels the generator) the app sees
`http.disconnect`, exactly as under uvicorn, and serving.py aborts the request and frees its KV.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
Chunk = tuple  # ("start", status, [(name, value), ...]) | ("body", bytes)


@dataclass(slots=True)
class ForwardedRequest:
    method: str
    path: str
    query_string: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    hint: Any = None        # routing.RequestHint, read by the Ray request router (never by the app)


class Lifespan:
    """Runs the app's lifespan (startup: the engine thread starts; shutdown: it stops) as a background task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task | None = None

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            self._failure = message.get("message", kind)
        if kind.startswith("lifespan.startup"):
            self._started.set()
        elif kind.startswith("lifespan.shutdown"):
            self._stopped.set()

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self.app(scope, self._inbox.get, self._send))
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            raise RuntimeError(f"app startup failed: {self._failure}")

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout_s)


async def call_app(app: ASGIApp, req: ForwardedRequest) -> AsyncIterator[Chunk]:
    """One HTTP exchange with `app`, yielded as chunks as the app sends them."""
    out: asyncio.Queue = asyncio.Queue()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": req.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            await out.put(("start", message["status"], headers))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await out.put(("body", bytes(message["body"])))
            if not message.get("more_body", False):
                await out.put(None)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": req.method.upper(),
             "scheme": "http", "path": req.path, "raw_path": req.path.encode(), "query_string": req.query_string,
             "root_path": "", "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req.headers],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0), "state": {}}

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await out.put(None)   # the app returned (or failed) without a final body message

    task = asyncio.ensure_future(run())
    try:
        while True:
            item = await out.get()
            if item is None:
                break
            yield item
        await task   # surface an exception the app let escape
    finally:
        if not task.done():   # our caller went away: tell the app, as a dropped connection would
            gone.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
