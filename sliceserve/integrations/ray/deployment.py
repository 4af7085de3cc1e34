"""The Ray Serve application: a thin forwarding ingress in front of N engine replicas.

- `EngineReplica`: one sliceserve engine (model, scheduler, async engine) per replica, serving the unchanged
  single-box FastAPI app (server/app.py) in-process over ASGI (asgi.py). It reports its load to the router
  through Serve's `record_routing_stats` hook.
- `SLOIngress`: the HTTP entry (Serve's proxy routes every path to it). It reads only routing hints from
  the body, forwards the raw request to a replica chosen by `SLORequestRouter` (or Serve's default router)
  and streams the replica's response back byte for byte. So clients see exactly the single-box API.

No accepted request is lost when a replica dies: until the first response byte has left the ingress the
request is resent to another replica (up to `max_attempts`); after that, a streaming response ends with
an explicit SSE error event then `data: [DONE]`, and the client gets an error, never silence.
"""

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Mapping

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle

from sliceserve.integrations.ray.asgi import ForwardedRequest, Lifespan, call_app
from sliceserve.integrations.ray.config import RaySettings, split_settings
from sliceserve.integrations.ray.hints import hint_from_request
from sliceserve.integrations.ray.router import SLORequestRouter
from sliceserve.server.settings import ServerSettings

log = logging.getLogger(__name__)
_REPLICA_GONE = (RayActorError, ActorUnavailableError)
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection"}


@serve.deployment
class EngineReplica:
    async def __init__(self, settings: dict[str, Any]) -> None:
        from sliceserve.server.app import create_app
        from sliceserve.server.state import build_state

        self.settings = ServerSettings.model_validate(settings)
        # Loading and calibrating take seconds: off the replica's event loop, so Serve's probes still answer.
        self.state = await asyncio.to_thread(build_state, self.settings)
        self.app = create_app(self.state)
        self.lifespan = Lifespan(self.app)
        await self.lifespan.startup()   # starts the engine thread on this replica's event loop

    async def handle(self, req: ForwardedRequest) -> AsyncIterator[tuple]:
        async for chunk in call_app(self.app, req):
            yield chunk

    def record_routing_stats(self) -> dict[str, Any]:
        from sliceserve.integrations.ray.snapshot import snapshot

        return {"load": snapshot(self.state).to_dict()}

    def check_health(self) -> None:
        engine = self.state.engine
        if not engine.is_alive or engine.fatal is not None:
            raise RuntimeError(f"engine loop is not running: {engine.fatal!r}")

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state is not None:
            state.engine.shutdown(timeout_s=2.0)


ingress_app = FastAPI(title="sliceserve (Ray Serve)")


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "service_unavailable", "param": None,
                                   "code": code}}, status_code=status)


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "InternalServerError", "param": None, "code": "replica_failed"}}
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\ndata: [DONE]\n\n".encode()


# Defined before the ingress class: serve.ingress makes a new class that Ray pickles by value, with the
# module globals it sees at that point.
async def _relay(gen: Any, first: bytes | None, sse: bool) -> AsyncIterator[bytes]:
    finished = False
    try:
        if first:
            yield first
        async for _, chunk in gen:
            yield chunk
        finished = True
    except _REPLICA_GONE as exc:
        log.warning("replica failed mid-response: %s", str(exc).splitlines()[0])
        finished = True
        if sse:
            yield _sse_error(f"the replica serving this request failed mid-stream ({type(exc).__name__}); "
                             "the partial output above is incomplete, retry the request")
    finally:
        if not finished:   # the client went away: cancel the replica's generator so it aborts the request
            gen.cancel()


@serve.deployment
@serve.ingress(ingress_app)
class SLOIngress:
    def __init__(self, engine: DeploymentHandle, max_attempts: int = 3) -> None:
        self.engine = engine.options(stream=True)
        self.max_attempts = max_attempts

    async def _open(self, fwd: ForwardedRequest) -> tuple[Any, tuple, bytes | None] | str:
        """Send `fwd` to a replica and wait for its status line and first body chunk; on a replica failure
        before that, resend. Returns (generator, start, first body) or why every attempt failed."""
        why = "no attempt made"
        for attempt in range(self.max_attempts):
            gen = self.engine.handle.remote(fwd)
            try:
                start = await gen.__anext__()
                first = None
                async for kind, *rest in gen:   # wait for the first body chunk (or the end of the body)
                    first = rest[0]
                    break
                return gen, start, first
            except _REPLICA_GONE as exc:
                why = f"{type(exc).__name__}: {exc}"
                log.warning("replica failed before answering (attempt %d/%d): %s", attempt + 1,
                            self.max_attempts, why.splitlines()[0])
                await asyncio.sleep(0.2 * (attempt + 1))   # let Serve drop the dead replica from its set
        return why

    @ingress_app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    async def forward(self, path: str, http: HTTPRequest) -> Response:
        body = await http.body()
        fwd = ForwardedRequest(http.method, "/" + path, http.url.query.encode(), list(http.headers.items()), body,
                               hint_from_request(body, http.headers) if http.method == "POST" else None)
        opened = await self._open(fwd)
        if isinstance(opened, str):
            return _error(503, f"no replica could serve the request after {self.max_attempts} attempts: "
                          f"{opened.splitlines()[0]}", "replica_failed")
        gen, (_, status, headers), first = opened
        headers = {k: v for k, v in headers if k.lower() not in _HOP_HEADERS}
        sse = headers.get("content-type", "").startswith("text/event-stream")
        return StreamingResponse(_relay(gen, first, sse), status_code=status, headers=headers)


def build_app(engine_settings: ServerSettings, ray_settings: RaySettings) -> serve.Application:
    """The bound Serve application: `serve.run(build_app(...))`."""
    options: dict[str, Any] = {
        "num_replicas": ray_settings.replicas,
        "max_ongoing_requests": ray_settings.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": ray_settings.num_cpus_per_replica,
                              "num_gpus": ray_settings.num_gpus_per_replica},
    }
    if ray_settings.routing == "slo":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=SLORequestRouter,
            request_routing_stats_period_s=ray_settings.stats_period_s,
            request_routing_stats_timeout_s=max(1.0, 5 * ray_settings.stats_period_s))
    engine = EngineReplica.options(**options).bind(engine_settings.model_dump())
    ingress = SLOIngress.options(ray_actor_options={"num_cpus": ray_settings.ingress_num_cpus},
                                 max_ongoing_requests=10 * ray_settings.max_ongoing_requests)
    return ingress.bind(engine, ray_settings.max_attempts)


def app_builder(args: Mapping[str, Any]) -> serve.Application:
    """Entry point for `serve run` / a Serve config file: `import_path:
    sliceserve.integrations.ray.deployment:app_builder`, `args:` = engine settings plus a `ray:` mapping."""
    ray_settings, engine_settings = split_settings(args)
    return build_app(engine_settings, ray_settings)
