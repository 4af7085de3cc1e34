"""Serve while the model loads: an ASGI app that answers /health 503 "loading" (every other path 503 +
Retry-After) until the real app is built in a background thread, then hands every request to it.

The port is bound before this runs (sliceserve/server/run.py), so clients see "loading" instead of a
refused connection, and a start-up that fails after binding still ends the process cleanly.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from contextlib import AsyncExitStack
from typing import Any, Callable

from starlette.types import Receive, Scope, Send

from sliceserve.server.gate import send_error
from sliceserve.server.lifecycle import Lifecycle, Phase
from sliceserve.server.protocol import APIError

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class LoadingApp:
    def __init__(self, build: Callable[[Lifecycle], Any], lifecycle: Lifecycle,
                 on_failure: Callable[[], None]) -> None:
        self.build, self.lifecycle, self.on_failure = build, lifecycle, on_failure
        self.app: Any = None
        self._stack = AsyncExitStack()
        self._loader: threading.Thread | None = None

    def still_loading(self) -> bool:
        """Whether the model load is still running (the server was stopped before it finished)."""
        return self._loader is not None and self._loader.is_alive()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._not_ready(scope, send)

    async def _not_ready(self, scope: Scope, send: Send) -> None:
        status, body = self.lifecycle.health()
        if scope["path"] == "/health":
            payload = json.dumps(body).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return
        await send_error(send, APIError(503, f"server is {self.lifecycle.phase.value}; retry later",
                                        type="service_unavailable", code=self.lifecycle.phase.value,
                                        headers={"Retry-After": "5"}))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()                                  # lifespan.startup
        loading = asyncio.ensure_future(self._load())
        await send({"type": "lifespan.startup.complete"})
        await receive()                                  # lifespan.shutdown
        if not loading.done():
            loading.cancel()
        await self._stack.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def work() -> None:   # a daemon thread: a SIGTERM during loading need not wait for it
            try:
                result: Any = self.build(self.lifecycle)
            except BaseException as exc:  # noqa: BLE001 - reported as the start-up failure
                result = exc
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        self._loader = threading.Thread(target=work, name="sliceserve-load", daemon=True)
        self._loader.start()
        result = await done
        try:
            if isinstance(result, BaseException):
                raise result
            await self._stack.enter_async_context(result.router.lifespan_context(result))
        except Exception as exc:  # noqa: BLE001 - any start-up failure ends the process with one line
            self.lifecycle.phase = Phase.FAILED
            self.lifecycle.failure = f"start-up failed: {one_line(exc)}"
            self.on_failure()
            return
        self.app = result
