"""Start the server: check the settings and bind the port first (fail in well under a second, naming the
problem), then serve "loading" while the model loads, then the OpenAI app; SIGTERM drains (lifecycle.py)."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from sliceserve.server.lifecycle import Lifecycle, Phase
from sliceserve.server.settings import ServerSettings

log = logging.getLogger("sliceserve.server")


def preflight(settings: ServerSettings) -> None:
    """Problems visible without loading anything: a missing model or profile file."""
    if settings.model is not None and not Path(settings.model).exists():
        raise ValueError(f"model not found: {settings.model} (--model: a HF directory or a GGUF file)")
    prof = settings.latency_profile
    if prof is not None and prof.endswith(".json") and not Path(prof).exists():
        raise ValueError(f"latency profile not found: {prof} (--latency-profile)")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot bind {host}:{port} (--host/--port): {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _warn_if_exposed(settings: ServerSettings) -> None:
    from sliceserve.server.gate import is_exposed

    if is_exposed(settings.host) and settings.api_key is None:
        log.warning("binding %s (reachable from other machines) without an API key: anyone who can reach it can "
                    "run generation; set --api-key or SLICESERVE_API_KEY", settings.host)


def _make_server(app: Any, settings: ServerSettings, lifecycle: Lifecycle):
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, except that the first SIGTERM / Ctrl+C drains (lifecycle.drain) instead of stopping; a
        second one ends the requests still in flight at once, each with an explicit error (uvicorn's own exit
        cancelled them: a plain-text 500 and a traceback each); a third is uvicorn's immediate exit."""

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            self._drain_task: asyncio.Task | None = None
            self._cut = False
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._drain_task is None and lifecycle.phase in (Phase.LOADING, Phase.SERVING):
                self._loop.call_soon_threadsafe(self._start_drain)
                return
            if lifecycle.phase is Phase.DRAINING and not self._cut:
                self._cut = True
                self._loop.call_soon_threadsafe(lifecycle.cut)
                return
            super().handle_exit(sig, frame)

        def _start_drain(self) -> None:
            if self._drain_task is None:
                self._drain_task = asyncio.ensure_future(lifecycle.drain(self._stop))

        def _stop(self) -> None:
            self.should_exit = True

    config = uvicorn.Config(app, log_level=settings.log_level, timeout_graceful_shutdown=2, lifespan="on")
    return DrainingServer(config)


def serve(settings: ServerSettings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    preflight(settings)
    sock = bind(settings.host, settings.port)
    _warn_if_exposed(settings)
    lifecycle = Lifecycle(settings.shutdown_timeout_s)

    def build(lc: Lifecycle) -> Any:
        from sliceserve.server.app import create_app
        from sliceserve.server.state import build_state

        log.info("loading model %s on %s", settings.model or "(embedded SmolLM2-135M-Instruct)", settings.device)
        state = build_state(settings)
        log.info("model %s ready: %d KV blocks of %d tokens, max_model_len %d", state.model_name,
                 state.engine.core.scheduler.kv.num_blocks, state.engine.core.scheduler.kv.block_size,
                 state.max_model_len)
        return create_app(state, lc)

    from sliceserve.server.loading import LoadingApp

    server = None
    app = LoadingApp(build, lifecycle, on_failure=lambda: setattr(server, "should_exit", True))
    server = _make_server(app, settings, lifecycle)
    server.run(sockets=[sock])
    if app.still_loading():
        _exit_during_load()
    if lifecycle.failure is not None:
        raise ValueError(lifecycle.failure)


def _exit_during_load() -> None:
    """End the process now: it was stopped (SIGTERM, Ctrl+C) while the model was loading. The load runs in a
    daemon thread, usually inside torch, and an interpreter that exits under a thread running torch code
    aborts (C++ terminate: "terminate called without an active exception", exit 134). Nothing was served
    and nothing is half-written where it counts (the model cache renames a finished copy into place, and
    sweeps the temporary copies of processes that are gone), so Python's teardown is skipped."""
    log.info("stopped while the model was loading")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
