"""The OpenAPI schema, complete for the routes of sliceserve/server/app.py: request bodies (the pydantic
models the server validates with), every status a route answers with its OpenAI error shape, and the
content types (JSON, SSE, Prometheus text).

The generation, embeddings and Ollama routes read their body themselves (size-limited, parsed off the event
loop), so FastAPI cannot infer their schema; it is added here instead. Other routes keep FastAPI's own schema.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from sliceserve.server.protocol import ChatRequest, CompletionRequest


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class CachedTokens(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: CachedTokens | None = None   # prompt tokens found in the prefix cache


class Completion(BaseModel):
    """A non-streamed answer (choices' shape differs between completions and chat)."""
    model_config = ConfigDict(extra="allow")
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage
    slo_report: dict[str, Any]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str


_ERRORS = {
    "400": "invalid request (the message and `param` name the problem)",
    "401": "missing or wrong API key (when the server has one)",
    "404": "unknown model or route",
    "413": "request body larger than max_body_bytes",
    "415": "POST body not sent as application/json",
    "429": "SLO cannot be met under the current load (overload: reject); see Retry-After",
    "500": "the request failed while running (e.g. its sampling failed)",
    "503": "queue full, queue timeout, loading or draining; see Retry-After",
}
# One server-sent event: `data: {chunk JSON}`, the last one `data: [DONE]`.
_SSE = {"text/event-stream": {"schema": {"type": "object", "required": ["data"],
                                         "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                                         "description": "`data: {chunk}` events, then `data: [DONE]`"}}}


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def _generation(model: type[BaseModel]) -> dict[str, Any]:
    ok = {"application/json": {"schema": {"$ref": "#/components/schemas/Completion"}}, **_SSE}
    return {"requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"200": {"description": "the answer (JSON, or SSE when `stream` is true)", "content": ok},
                          **{code: _error(desc) for code, desc in _ERRORS.items()}}}


def _common_errors(op: dict[str, Any], codes: tuple[str, ...]) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)     # FastAPI's validation error: this server answers 400 instead
    for code in codes:
        responses.setdefault(code, _error(_ERRORS.get(code, "error")))


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in models:
        schema = m.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[m.__name__] = schema
    return out


class OllamaError(BaseModel):
    error: str


def _other_bodies() -> dict[str, type[BaseModel]]:
    """The bodies of routes that read them themselves besides generation: embeddings and the Ollama API."""
    from sliceserve.server.embeddings import EmbeddingRequest
    from sliceserve.server.ollama.protocol import ChatBody, EmbedBody, GenerateBody, LegacyEmbeddingsBody, ShowBody

    return {"/v1/embeddings": EmbeddingRequest, "/api/chat": ChatBody, "/api/generate": GenerateBody,
            "/api/embed": EmbedBody, "/api/embeddings": LegacyEmbeddingsBody, "/api/show": ShowBody}


def _other(path: str, model: type[BaseModel]) -> dict[str, Any]:
    """Body and answers of an embeddings or Ollama route: errors in that API's own shape (Ollama: `{"error":
    message}`), JSON answers, NDJSON for Ollama's streamed chat and generate."""
    ollama = path.startswith("/api/")
    err = {"$ref": "#/components/schemas/" + ("OllamaError" if ollama else "ErrorBody")}
    ok = {"application/json": {"schema": {"type": "object"}}}
    if path in ("/api/chat", "/api/generate"):
        ok["application/x-ndjson"] = {"schema": {"type": "string"}}
    return {"requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"200": {"description": "the answer", "content": ok},
                          **{code: {"description": desc, "content": {"application/json": {"schema": err}}}
                             for code, desc in _ERRORS.items()},
                          "501": {"description": "not supported by this backend (embeddings on llama.cpp)",
                                  "content": {"application/json": {"schema": err}}}}}


# Ollama fields the server takes only to refuse them by name (400) unless they are null / false.
_REFUSED = ("format", "think", "tools", "logprobs", "top_logprobs", "images", "tool_calls", "tool_name", "thinking")


def _ollama_truths(schemas: dict[str, Any], name: str, served: str | None) -> None:
    """What the Ollama bodies really accept: the served model's name, the options that are honoured, and
    null for the fields that are refused (so a client reading the schema knows before it asks)."""
    from sliceserve.server.ollama.protocol import HonouredOptions

    schemas.setdefault("HonouredOptions", HonouredOptions.model_json_schema())
    for schema_name in (name, "Message"):
        props = schemas.get(schema_name, {}).get("properties", {})
        for field in _REFUSED:
            if field in props:
                props[field] = {"type": "null", "description": "not supported: any other value is refused (400)"}
        if schema_name == "Message" and "role" in props:
            props["role"] = {"type": "string", "enum": ["system", "user", "assistant", "tool"]}
        if "options" in props:
            props["options"] = {"anyOf": [{"$ref": "#/components/schemas/HonouredOptions"}, {"type": "null"}]}
        if served and "model" in props:   # Ollama names the model on every call
            props["model"] = {"type": "string", "enum": [served], "description": "the served model"}


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    others = _other_bodies()
    schema.setdefault("components", {}).setdefault("schemas", {}).update(
        _schemas(CompletionRequest, ChatRequest, ErrorBody, Completion, Health, OllamaError, *others.values()))
    paths = schema["paths"]
    for path, model in (("/v1/completions", CompletionRequest), ("/v1/chat/completions", ChatRequest)):
        if path in paths:
            paths[path]["post"].update(_generation(model))
    served = getattr(getattr(app.state, "serving", None), "model_name", None)
    for path, model in others.items():
        if path in paths:
            paths[path]["post"].update(_other(path, model))
        if path.startswith("/api/"):
            _ollama_truths(schema["components"]["schemas"], model.__name__, served)
    for path, ops in paths.items():
        for method, op in ops.items():
            if (path in ("/v1/completions", "/v1/chat/completions") or path in others) and method == "post":
                continue
            _common_errors(op, ("400", "401", "404") if method == "get" else tuple(_ERRORS))
    if "/health" in paths:
        health = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}
        paths["/health"]["get"]["responses"]["200"] = {"description": "serving", **health}
        paths["/health"]["get"]["responses"]["503"] = {"description": "loading, draining or engine dead", **health}
    if "/ready" in paths:
        paths["/ready"]["get"]["responses"]["503"] = {"description": "not ready (the body says why)",
                                                      "content": {"application/json": {"schema": {"type": "object"}}}}
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"]["200"] = {
            "description": "Prometheus exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi   # type: ignore[method-assign]
