"""OpenAI request bodies (the fields this server honours) plus the SLO extensions, and the error shape.

Every field is declared (server/fields.py lists each one: honoured, or refused with a 400 naming it); an
unknown field is a 400 too, so nothing a client asks for is dropped in silence.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from sliceserve.server.protocol_ext import ChatOnlyFields, CompletionOnlyFields, ProcessingFields
from sliceserve.slo import SLO, parse_slo


class APIError(Exception):
    """An error answered as OpenAI's `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(exc: ValidationError) -> APIError:
    first = exc.errors()[0]
    param = ".".join(str(x) for x in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return APIError(400, f"unknown field `{param}`: not an OpenAI, vLLM or sliceserve request field this "
                        "server knows (see docs/SERVER.md, 'Request fields')", param=param, code="unknown_field")
    messages = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
    return APIError(400, messages, param=param, code="invalid_value")


class SLOBody(BaseModel):
    """A request's own bounds: `{"ttft_ms": 200, "tpot_ms": 50}`, or SLO text in the one grammar
    (sliceserve.slo.parse_slo, request scope): `"ttft <= 200ms, tpot <= 50ms"` = `{"expr": "..."}`."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    expr: str | None = None
    _expr_slo: SLO = PrivateAttr(default_factory=SLO)     # what `expr` sets, read once

    @model_validator(mode="before")
    @classmethod
    def _text(cls, data: Any) -> Any:
        return {"expr": data} if isinstance(data, str) else data

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        if value is not None:
            parse_slo(value, scope="request")      # a class target or a resource here is a 400 naming why
        return value

    @model_validator(mode="after")
    def _once(self) -> "SLOBody":
        if self.expr is not None:
            spec = parse_slo(self.expr, scope="request")
            for c in spec:
                if getattr(self, f"{c.metric}_ms") is not None:
                    raise ValueError(f"{c.metric} is given twice: {c.metric}_ms and {c.text!r} in expr; keep one")
            self._expr_slo = spec.request_slo()
        return self

    def bounds(self) -> SLO:
        """The bounds in seconds; None where the body sets none."""
        ms = lambda v: None if v is None else v / 1e3  # noqa: E731
        own = SLO(ms(self.ttft_ms), ms(self.tpot_ms), ms(self.e2e_ms))
        return own.merged(self._expr_slo)

    @field_validator("ttft_ms", "tpot_ms", "e2e_ms")
    @classmethod
    def _not_zero_seconds(cls, value: float | None) -> float | None:
        # A positive bound can still be 0 s after the ms -> s division (5e-324 ms): no time bound at all. Here,
        # so every route that takes an SLO body (OpenAI, embeddings, Ollama) refuses it alike.
        if value is not None and not value / 1e3 > 0:
            raise ValueError(f"must be a positive number of milliseconds that is not 0 in seconds, got {value!r}")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(ProcessingFields):
    # Unknown fields are refused by name; NaN and infinities (JSON NaN/Infinity, or 1e309) are no valid value of
    # any field: 400 naming it.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)              # vLLM extension; 0 disables it
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # SLO extensions
    slo: SLOBody | None = None
    slo_class: str | None = None
    utility: float | None = Field(default=None, gt=0)
    priority: int = 0

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(CompletionOnlyFields, _Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16      # OpenAI's default for completions


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None     # an assistant's earlier calls (rendered back)
    tool_call_id: str | None = None                    # a tool result: which call it answers
    refusal: str | None = None                         # an earlier assistant refusal (rendered as its text)

    def text(self) -> str:
        if self.content is None:
            return self.refusal or ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, "only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(ChatOnlyFields, _Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
