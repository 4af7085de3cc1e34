"""The FastAPI app: OpenAI routes, health and readiness, Prometheus metrics, OpenAI-shaped errors.

`create_app` is the list of what the server is made of, in order; each step is a named function or a router
(new endpoints join as one `include_router` line)."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
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
from sliceserve.server.probes import probes_router
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.requests import build_requests
from sliceserve.server.serving import respond_full, respond_stream, submit
from sliceserve.server.structured import compile_spec, spec_for
from sliceserve.server.state import ServingState

log = logging.getLogger(__name__)
_ENGINE_STOP_S = 120.0


def create_app(state: ServingState, lifecycle: Lifecycle | None = None) -> FastAPI:
    lifecycle = lifecycle if lifecycle is not None else Lifecycle(state.settings.shutdown_timeout_s)
    lifecycle.state = state
    app = FastAPI(title="sliceserve", lifespan=_lifespan(state, lifecycle))
    app.state.serving = state
    app.state.lifecycle = lifecycle
    install_gate(app, state.settings, lifecycle)
    install_openapi(app)
    _attach_controller(app, state)   # GET /v1/status, resource monitor, feedback controller
    attach_dashboard(app, state)     # GET /dashboard and the history /v1/status shows it (after the controller)
    _install_error_handlers(app)
    app.include_router(vllm_router(state))         # /v1/models/{id}, /tokenize, /detokenize, /version
    app.include_router(_generation_router(state))  # POST /v1/completions, /v1/chat/completions
    app.include_router(embeddings_router)          # POST /v1/embeddings (sliceserve.server.embeddings)
    app.include_router(ollama_router)              # /api/*: the Ollama API (sliceserve.server.ollama)
    app.include_router(probes_router(state, lifecycle))   # /v1/models, /health, /ready, /metrics
    return app


def _lifespan(state: ServingState, lifecycle: Lifecycle) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.engine.start()
        lifecycle.phase = Phase.SERVING
        log.info("serving %s with policy %s", state.model_name, state.settings.policy)
        try:
            yield
        finally:
            # Wait for the step in progress however long it takes (a long prefill on a busy CPU can pass 5 s):
            # exiting with the engine thread inside torch aborts the process ("terminate called ...").
            await asyncio.to_thread(state.engine.shutdown, _ENGINE_STOP_S)

    return lifespan


def _attach_controller(app: FastAPI, state: ServingState) -> None:
    """The controller's switch and bounds, and the class and server targets, from the settings."""
    attach_control(app, state, state.settings.controller.to_config(),
                   class_constraints=state.settings.class_targets(),
                   server_constraints=state.settings.server_constraints())


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OpenAI-shaped body; an unexpected one is logged and answered 500."""

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


def _generation_router(state: ServingState) -> APIRouter:
    router = APIRouter()

    async def generate(http: HTTPRequest, model: type[CompletionRequest] | type[ChatRequest]) -> Response:
        body = await read_request(http, state, model)   # parsed and checked off the event loop
        spec = spec_for(body)
        await compile_spec(spec, state.tokenizer)     # off the event loop and the engine thread; cached
        reqs = await asyncio.to_thread(build_requests, state, body, http.headers, spec)   # tokenising
        streams = await submit(state, reqs)
        if body.stream:
            return await respond_stream(state, body, reqs, streams, http)
        return await respond_full(state, body, reqs, streams, http)

    @router.post("/v1/completions")
    async def completions(http: HTTPRequest) -> Response:
        return await generate(http, CompletionRequest)

    @router.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest) -> Response:
        return await generate(http, ChatRequest)

    return router
