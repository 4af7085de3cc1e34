"""The ASGI gate in front of every route (including routers other modules add): API key, JSON-only POSTs,
the body-size limit, and refusing new work while the server drains. CORS and the Host check use
Starlette's own middleware around it (`install_gate`).

Why ASGI rather than FastAPI dependencies: a dependency protects only the routes that declare it; the gate
sees every request before any route, so a route added later is covered without anyone remembering to.
Why these checks: a browser page can POST `text/plain` cross-origin without a preflight, and DNS
rebinding lets a page read replies from 127.0.0.1; requiring `application/json` forces a preflight (which
fails without an allowed origin) and the Host check refuses rebound names.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sliceserve.server.lifecycle import Lifecycle
from sliceserve.server.protocol import APIError

log = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/health", "/ready"})          # always open: load balancers and orchestrators
MONITORING_PATHS = frozenset({"/metrics", "/v1/status"})
# The dashboard page holds no data (it polls /v1/status, which the key guards, sending the key it is given): a
# browser cannot put a Bearer header on the page load itself.
PAGE_PATHS = frozenset({"/dashboard"})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


async def send_error(send: Send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def too_large(limit: int) -> APIError:
    # Connection: close, so the server stops reading the rest of a body it will never use.
    return APIError(413, f"request body exceeds the {limit}-byte limit (max_body_bytes)", code="body_too_large",
                    headers={"Connection": "close"})


class Gate:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, *, api_key: str | None = None,
                 public_monitoring: bool = False, max_body_bytes: int = 2 << 20) -> None:
        self.app, self.lifecycle = app, lifecycle
        self.key = api_key.encode() if api_key else None
        self.open_paths = PROBE_PATHS | PAGE_PATHS | (MONITORING_PATHS if public_monitoring else frozenset())
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        err = self._refusal(scope, headers)
        if err is not None:
            await send_error(send, err)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.lifecycle.inflight += 1
        try:
            await self.app(scope, self._limited(receive), send)
        finally:
            self.lifecycle.inflight -= 1

    def _refusal(self, scope: Scope, headers: Headers) -> APIError | None:
        path, method = scope["path"], scope["method"]
        if self.key is not None and path not in self.open_paths and not self._authorised(headers):
            return APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                            code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if method != "POST":
            return None
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return APIError(415, f"POST bodies must be sent as application/json, got {ctype or 'no content type'!r}",
                            code="unsupported_media_type")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return too_large(self.max_body_bytes)
        if not self.lifecycle.admitting:
            return APIError(503, f"server is {self.lifecycle.phase.value}; retry later", type="service_unavailable",
                            code=self.lifecycle.phase.value, headers={"Retry-After": "5", "Connection": "close"})
        return None

    def _authorised(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # Constant-time: the comparison's duration must not reveal how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)

    def _limited(self, receive: Receive) -> Receive:
        """`receive` that counts body bytes as they arrive (chunked bodies have no Content-Length) and
        raises 413 as soon as the limit is passed, before the rest is read."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise too_large(self.max_body_bytes)
            return message

        return limited


def default_hosts(bind: str) -> list[str]:
    """Host header values a server bound to `bind` answers: its loopback names, or anything when bound to
    all interfaces (the operator then sets allowed_hosts to the names clients use)."""
    if bind in ("0.0.0.0", "::", ""):
        return ["*"]
    hosts = {bind, f"[{bind}]"} if ":" in bind else {bind}
    try:
        if ipaddress.ip_address(bind).is_loopback:
            hosts.update(_LOOPBACK_NAMES)
    except ValueError:      # a name, e.g. localhost
        if bind == "localhost":
            hosts.update(_LOOPBACK_NAMES)
    return sorted(hosts)


def is_exposed(bind: str) -> bool:
    """True when `bind` accepts connections from other machines."""
    if bind == "localhost":
        return False
    try:
        return not ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return True


def install_gate(app: Any, settings: Any, lifecycle: Lifecycle) -> None:
    """Gate innermost, then the Host check, then CORS outermost (a preflight is answered before the key
    is asked for, as browsers send none with it)."""
    app.add_middleware(Gate, lifecycle=lifecycle, api_key=settings.api_key,
                       public_monitoring=settings.public_monitoring, max_body_bytes=settings.max_body_bytes)
    hosts = settings.allowed_hosts if settings.allowed_hosts is not None else default_hosts(settings.host)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], max_age=600)
