"""The server's phases and what /health says in each: loading -> serving -> draining (-> stopped), or failed.

SIGTERM (or Ctrl+C) starts a drain instead of uvicorn's abrupt stop: new generation requests get 503 while
the listening socket stays open, in-flight requests may finish for `shutdown_timeout_s`, then every request
still running is ended by the engine (a streaming client gets an error event and `data: [DONE]`, a waiting
one a JSON error), and only then does uvicorn exit (exit code 0). A second signal during the drain ends the
requests still in flight at once, the same way; a third is uvicorn's immediate exit.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

_POLL_S = 0.05
_FLUSH_S = 5.0     # after the cut, time for the ended streams to write their last events


class Phase(enum.Enum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"
    FAILED = "failed"


class Lifecycle:
    def __init__(self, shutdown_timeout_s: float = 30.0, phase: Phase = Phase.LOADING) -> None:
        self.phase = phase
        self.shutdown_timeout_s = shutdown_timeout_s
        self.inflight = 0              # generation requests being answered (event loop only)
        self.failure: str | None = None
        self.state: Any = None         # ServingState once loaded
        self._cut = False              # a second stop signal: end what is in flight now (event loop only)

    @property
    def admitting(self) -> bool:
        return self.phase is Phase.SERVING

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status code, body) for GET /health."""
        if self.phase is not Phase.SERVING:
            return 503, {"status": self.phase.value, **({"error": self.failure} if self.failure else {})}
        engine = self.state.engine if self.state is not None else None
        if engine is not None and (not engine.is_alive or engine.fatal is not None):
            why = f"engine stopped: {engine.fatal}" if engine.fatal is not None else "engine stopped"
            return 503, {"status": "engine_dead", "error": why}
        return 200, {"status": "ok"}

    async def drain(self, stop: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        """Stop admitting, wait for in-flight requests up to the timeout, end the rest, then `stop()`."""
        self.phase = Phase.DRAINING
        log.info("draining: %d requests in flight, waiting up to %g s", self.inflight, self.shutdown_timeout_s)
        deadline = clock() + self.shutdown_timeout_s
        while self.inflight > 0 and clock() < deadline and not self._cut:
            await asyncio.sleep(_POLL_S)
        if self.inflight > 0 and self.state is not None:
            if self._cut:
                log.warning("second stop signal: ending %d requests still in flight", self.inflight)
                why = "server shut down: stopped by a second signal while draining"
            else:
                log.warning("shutdown timeout: ending %d requests still in flight", self.inflight)
                why = f"server shut down: still running after the {self.shutdown_timeout_s:g} s shutdown timeout"
            self.state.engine.abort_all(why)
            deadline = clock() + _FLUSH_S
            while self.inflight > 0 and clock() < deadline:
                await asyncio.sleep(_POLL_S)
        stop()

    def cut(self) -> None:
        """End the drain's wait now (a second stop signal): what is still in flight is ended at once."""
        self._cut = True
