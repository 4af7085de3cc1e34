"""Ollama request bodies and how their `options` map to sampling parameters.

Every field is either honoured or refused with a 400 naming it; Ollama accepts a few knobs (mirostat,
tail-free and typical sampling) this engine cannot apply yet: their neutral values ("off") are accepted, any
other value is refused. Load-time options (threads, GPU layers, mmap) belong to `sliceserve serve`.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sliceserve.server.embeddings import EmbeddingInput, EmbeddingSLOFields
from sliceserve.server.protocol import APIError

# Ollama's documented defaults (docs/modelfile.md, "PARAMETER"), used when a request leaves them out.
DEFAULTS: dict[str, Any] = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1,
                            "repeat_last_n": 64}
# min_p as llama.cpp's: drop tokens less likely than min_p times the most likely one; the three penalties as
# llama.cpp counts them, over the last `repeat_last_n` tokens of prompt and output (model/logits_processing.py).
HONOURED = frozenset({"temperature", "top_k", "top_p", "min_p", "seed", "num_predict", "stop", "num_ctx",
                      "repeat_penalty", "presence_penalty", "frequency_penalty", "repeat_last_n"})
# Accepted only at their neutral value: what the option does when it is off.
NEUTRAL: dict[str, Any] = {"mirostat": 0, "tfs_z": 1.0, "typical_p": 1.0,
                           # llama.cpp penalises a newline like any other token (its penalize_nl is gone)
                           "penalize_newline": True}
# Meaningful only with mirostat on (so honoured, trivially, while it is off).
DEPENDENT = {"mirostat_tau": "mirostat", "mirostat_eta": "mirostat"}
LOAD_TIME = frozenset({"numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
                       "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep"})


def _refuse(name: str, why: str) -> APIError:
    return APIError(400, f"option {name!r} {why}", param=f"options.{name}", code="unsupported_option")


def sampling_fields(options: dict[str, Any] | None) -> dict[str, Any]:
    """The honoured options (Ollama defaults filled in); a 400 naming any option that cannot be honoured."""
    options = dict(options or {})
    for name, value in options.items():
        if name in HONOURED or value is None:
            continue
        if name in NEUTRAL:
            if value != NEUTRAL[name]:
                raise _refuse(name, f"is not supported yet (only {NEUTRAL[name]!r}, what it means off)")
        elif name in DEPENDENT:
            continue   # no effect while its parent option is off, which NEUTRAL enforces
        elif name in LOAD_TIME:
            raise _refuse(name, "is a load-time setting: set it when starting `sliceserve serve`")
        else:
            raise _refuse(name, "is not a known Ollama option")
    try:
        fields = HonouredOptions.model_validate({k: options[k] for k in HONOURED if options.get(k) is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(x) for x in first["loc"])
        raise APIError(400, f"option {name!r}: {first['msg']}", param=f"options.{name}", code="invalid_value") from None
    return {**DEFAULTS, **fields.model_dump(exclude_none=True)}


class HonouredOptions(BaseModel):
    """Types of the options this server applies (values are checked where they are used). Strict: `true` is
    not a seed and "5" is not a num_predict (an int is still a float)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_last_n: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    stop: list[str] | str | None = None


class _Base(EmbeddingSLOFields):
    """Fields every Ollama generation route takes. Unknown fields are refused."""
    model: str = Field(min_length=1)
    options: dict[str, Any] | None = None
    keep_alive: float | int | str | None = None   # the model always stays loaded: every value is honoured
    stream: bool = True
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def response_format(self) -> dict[str, Any] | None:
        """`format` as the OpenAI `response_format` the generation path constrains by (server/structured.py):
        "json" is JSON mode, an object is a JSON schema; a 400 for anything else."""
        if self.format in (None, ""):
            return None
        if self.format == "json":
            return {"type": "json_object"}
        if isinstance(self.format, dict):
            return {"type": "json_schema", "json_schema": {"name": "format", "schema": self.format}}
        raise APIError(400, f"format must be \"json\" or a JSON schema object, got {self.format!r}", param="format")

    def refuse_unsupported(self) -> None:
        self.response_format()
        if self.think not in (None, False):
            raise APIError(400, "think is not supported: this model has no thinking mode", param="think")
        if self.logprobs or self.top_logprobs:
            raise APIError(400, "logprobs are not supported on the Ollama routes yet", param="logprobs")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str = ""
    images: list[Any] | None = None
    thinking: str | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("system", "user", "assistant", "tool"):
            raise ValueError("role must be system, user, assistant or tool")
        return value

    def refuse_unsupported(self, i: int) -> None:
        if self.images:
            raise APIError(400, "images are not supported: the served model reads text only",
                           param=f"messages.{i}.images", code="unsupported_images")
        if self.tool_calls and self.role != "assistant":
            raise APIError(400, "tool_calls belong on assistant messages", param=f"messages.{i}.tool_calls")
        if self.tool_name and self.role != "tool":
            raise APIError(400, "tool_name belongs on tool messages", param=f"messages.{i}.tool_name")
        if self.thinking:
            raise APIError(400, "thinking is not supported: this model has no thinking mode",
                           param=f"messages.{i}.thinking")


class ChatBody(_Base):
    messages: list[Message] = Field(min_length=1)
    tools: list[Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        for i, m in enumerate(self.messages):
            m.refuse_unsupported(i)

    def openai_messages(self) -> list[dict[str, Any]]:
        """The messages as the OpenAI chat body has them. An assistant's earlier `tool_calls` (arguments an
        object) get ids and JSON-string arguments; a tool result answers the oldest open call of its
        `tool_name` (or the oldest open call, without one), as Ollama pairs them by order."""
        out: list[dict[str, Any]] = []
        open_calls: list[tuple[str, str]] = []   # (id, function name) of calls not yet answered
        for i, m in enumerate(self.messages):
            msg: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                calls = []
                for k, call in enumerate(m.tool_calls):
                    fn = call.get("function") if isinstance(call, dict) else None
                    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                        raise APIError(400, "a tool call needs function.name", param=f"messages.{i}.tool_calls.{k}")
                    call_id = f"call_{i}_{k}"
                    args = fn.get("arguments", {})
                    calls.append({"id": call_id, "type": "function", "function": {
                        "name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
                    open_calls.append((call_id, fn["name"]))
                msg["tool_calls"] = calls
            if m.role == "tool":
                match = [c for c in open_calls if m.tool_name in (None, c[1])]
                if not match:
                    raise APIError(400, f"a tool message ({m.tool_name or 'unnamed'}) must answer a call of an "
                                   "earlier assistant message", param=f"messages.{i}")
                open_calls.remove(match[0])
                msg["tool_call_id"] = match[0][0]
                if m.tool_name:
                    msg["name"] = m.tool_name
            out.append(msg)
        return out


class GenerateBody(_Base):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    context: list[int] | None = None
    images: list[Any] | None = None
    template: str | None = None
    suffix: str | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.images:
            raise APIError(400, "images are not supported: the served model reads text only", param="images",
                           code="unsupported_images")
        if self.template:
            raise APIError(400, "template is not supported: the model's own chat template is used (or raw)",
                           param="template")
        if self.suffix:
            raise APIError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")


class EmbedBody(EmbeddingSLOFields):
    model: str = Field(min_length=1)
    input: EmbeddingInput
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | int | str | None = None
    dimensions: int | None = Field(default=None, gt=0)


class LegacyEmbeddingsBody(EmbeddingSLOFields):
    model: str = Field(min_length=1)
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: float | int | str | None = None


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    name: str | None = None      # the older spelling
    verbose: bool = False


def refuse_embed_options(options: dict[str, Any] | None) -> None:
    """Embeddings sample nothing: only options that change nothing here are accepted (none are honoured)."""
    for name, value in (options or {}).items():
        if value is not None:
            raise _refuse(name, "does not apply to embeddings here; leave it out")
