"""Server settings: defaults < YAML file < SLICESERVE_* environment < command line.

One pydantic model validates the merged result, so a typo in the file (unknown key) or a bad value from any
source becomes one ValueError naming the field.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sliceserve.slo import BUILTIN_CLASSES, SLO, SLOClass

ENV_PREFIX = "SLICESERVE_"


class SLOClassSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    utility: float = Field(default=1.0, gt=0)

    def to_class(self, name: str) -> SLOClass:
        ms = lambda v: None if v is None else v / 1e3  # noqa: E731
        return SLOClass(name, SLO(ms(self.ttft_ms), ms(self.tpot_ms), ms(self.e2e_ms)), self.utility)


def _builtin_classes() -> dict[str, SLOClassSettings]:
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    return {name: SLOClassSettings(ttft_ms=ms(c.slo.ttft_s), tpot_ms=ms(c.slo.tpot_s), e2e_ms=ms(c.slo.e2e_s),
                                   utility=c.utility) for name, c in BUILTIN_CLASSES.items()}


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = None                  # HF dir or GGUF file; None = the embedded SmolLM2-135M
    served_model_name: str | None = None      # the id /v1/models reports; default: the loader's name
    policy: str = "slice"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: str = "cpu"
    dtype: str | None = None
    num_threads: int | None = Field(default=1, gt=0)   # one torch thread is the safe default (DESIGN.md)
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0)
    block_size: int = Field(default=16, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int = Field(default=16, gt=0)
    max_num_batched_tokens: int = Field(default=512, gt=0)
    # Bounded waiting queue: arrivals beyond it get 503.
    max_waiting: int = Field(default=64, gt=0)
    # A request whose SLO cannot be met under the current load: refuse (429 + Retry-After) or serve anyway.
    overload: Literal["reject", "best_effort"] = "best_effort"
    latency_profile: str | None = None         # JSON from `sliceserve profile`, or a built-in name
    calibrate: bool = True                     # measure a few iterations at start when no profile is given
    default_max_tokens: int = Field(default=256, gt=0)   # chat requests without max_tokens
    default_slo_class: str | None = None       # class of requests that name none (None: no SLO)
    slo_classes: dict[str, SLOClassSettings] = Field(default_factory=_builtin_classes)
    # Multiplies every class bound: the built-in classes were written for a GPU (SLICE paper), a CPU needs more.
    slo_scale: float = Field(default=1.0, gt=0)
    scheduler: dict[str, Any] = Field(default_factory=dict)   # extra SchedulerConfig fields (slice_*, ...)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("slo_classes")
    @classmethod
    def _nonempty_names(cls, value: dict[str, SLOClassSettings]) -> dict[str, SLOClassSettings]:
        if any(not name for name in value):
            raise ValueError("SLO class names must not be empty")
        return value

    @model_validator(mode="after")
    def _default_class_known(self) -> "ServerSettings":
        if self.default_slo_class is not None and self.default_slo_class not in self.slo_classes:
            raise ValueError(f"default_slo_class {self.default_slo_class!r} is not one of the slo_classes "
                             f"({', '.join(self.slo_classes)})")
        return self

    def classes(self) -> dict[str, SLOClass]:
        return {name: SLOClass(c.name, c.slo.scaled(self.slo_scale), c.utility)
                for name, c in ((n, s.to_class(n)) for n, s in self.slo_classes.items())}


def _describe(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(settings)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting; known: " + ", ".join(ServerSettings.model_fields)
        parts.append(f"{loc}: {msg}")
    return f"invalid server settings ({source}): " + "; ".join(parts)


def read_config_file(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    # Accept the CLI spelling (max-waiting) as well as the field name (max_waiting).
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """SLICESERVE_PORT=8001 -> {"port": "8001"}; mapping-valued settings are given as JSON."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in ServerSettings.model_fields:
            raise ValueError(f"unknown environment setting {key}; known: "
                             + ", ".join(ENV_PREFIX + n.upper() for n in ServerSettings.model_fields))
        if name in ("slo_classes", "scheduler"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{key} must be JSON: {exc}") from None
        out[name] = value
    return out


def load_settings(cli: Mapping[str, Any] | None = None, config_file: str | None = None,
                  environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Merge the sources (CLI values that are None count as not given) and validate once."""
    merged: dict[str, Any] = {}
    sources = []
    if config_file:
        merged.update(read_config_file(config_file))
        sources.append(f"file {config_file}")
    env = read_env(os.environ if environ is None else environ)
    if env:
        merged.update(env)
        sources.append("environment")
    merged.update({k: v for k, v in (cli or {}).items() if v is not None})
    try:
        return ServerSettings.model_validate(merged)
    except ValidationError as exc:
        raise ValueError(_describe(exc, ", ".join(sources + ["command line"]))) from None
