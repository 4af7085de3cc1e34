"""The FastAPI app: OpenAI routes, health and readiness, Prometheus metrics, OpenAI-shaped errors."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from sliceserve.server.control import attach_control
from sliceserve.server.dashboard import attach_dashboard
from sliceserve.server.embeddings import router as embeddings_router
from sliceserve.server.endpoints import vllm_router
from sliceserve.server.gate import install_gate
from sliceserve.server.intake import read_request
from sliceserve.server.lifecycle import Lifecycle, Phase
from sliceserve.server.ollama import router as ollama_router
from sliceserve.server.openapi import install_openapi
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.requests import build_requests
from sliceserve.server.serving import respond_full, respond_stream, submit
from sliceserve.server.structured import compile_spec, spec_for
from sliceserve.server.state import ServingState

log = logging.getLogger(__name__)
# The engine loop beats at least every 0.5 s when idle; a step longer than this means it is wedged.
_READY_STALE_S = 30.0
_ENGINE_STOP_S = 120.0


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(state: ServingState, lifecycle: Lifecycle | None = None) -> FastAPI:
    lifecycle = lifecycle if lifecycle is not None else Lifecycle(state.settings.shutdown_timeout_s)
    lifecycle.state = state

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.engine.start()
        lifecycle.phase = Phase.SERVING
        log.info("serving %s with policy %s", state.model_name, state.settings.policy)
        try:
            yield
        finally:
            # Wait for the step in progress however long it takes (a long prefill on a busy CPU can pass 5 s):
            # exiting with the engine thread inside torch aborts the process ("terminate called ...").
            await asyncio.to_thread(state.engine.shutdown, _ENGINE_STOP_S)

    app = FastAPI(title="sliceserve", lifespan=lifespan)
    app.state.serving = state
    app.state.lifecycle = lifecycle
    install_gate(app, state.settings, lifecycle)
    install_openapi(app)
    # GET /v1/status, resource monitor, feedback controller (switch and bounds from the settings).
    attach_control(app, state, state.settings.controller.to_config(),
                   class_constraints=state.settings.class_targets(),
                   server_constraints=state.settings.server_constraints())
    attach_dashboard(app, state)   # GET /dashboard and the history /v1/status shows it (after the controller)

    @app.exception_handler(APIError)
    async def _api_error(_: HTTPRequest, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        return _error_response(APIError(400, str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        kind = "NotFoundError" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(APIError(exc.status_code, str(exc.detail), type=kind))

    @app.exception_handler(Exception)
    async def _unexpected(_: HTTPRequest, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}",
                                        type="InternalServerError"))

    async def _generate(http: HTTPRequest, model: type[CompletionRequest] | type[ChatRequest]) -> Response:
        body = await read_request(http, state, model)   # parsed and checked off the event loop
        spec = spec_for(body)
        await compile_spec(spec, state.tokenizer)     # off the event loop and the engine thread; cached
        reqs = await asyncio.to_thread(build_requests, state, body, http.headers, spec)   # tokenising
        streams = await submit(state, reqs)
        if body.stream:
            return await respond_stream(state, body, reqs, streams, http)
        return await respond_full(state, body, reqs, streams, http)

    app.include_router(vllm_router(state))   # /v1/models/{id}, /tokenize, /detokenize, /version

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest) -> Response:
        return await _generate(http, CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest) -> Response:
        return await _generate(http, ChatRequest)

    app.include_router(embeddings_router)   # POST /v1/embeddings (sliceserve.server.embeddings)
    app.include_router(ollama_router)       # /api/*: the Ollama API (sliceserve.server.ollama)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        # max_model_len as vLLM reports it; vocab_size lets `bench --url` send valid random token prompts.
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": 0,
                                            "owned_by": "sliceserve", "max_model_len": state.max_model_len,
                                            "vocab_size": state.vocab_size}]}

    @app.get("/health")
    async def health() -> JSONResponse:
        status, body = lifecycle.health()
        return JSONResponse(body, status_code=status)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        engine = state.engine
        beat_age = time.monotonic() - engine.last_beat_s
        ok = engine.is_alive and engine.fatal is None and beat_age < _READY_STALE_S
        body = {"ready": ok, "model": state.model_name, "policy": state.settings.policy,
                "engine_alive": engine.is_alive, "last_beat_age_s": round(beat_age, 3),
                # The latency model's current one-sequence decode step and 256-token prefill (calibrated
                # online; for a look, not for grading: `bench --url` never scales SLOs by them).
                "decode_l1_s": engine.core.scheduler.latency.decode_time(1, 0.0),
                "prefill_256_s": engine.core.scheduler.latency.prefill_time(256)}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
