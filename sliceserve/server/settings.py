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

from sliceserve.server.settings_control import (ControllerSettings, apply_class_slo_flags, deep_merge,
                                                parse_class_slo, parse_memory, parse_server_slo)
from sliceserve.slo import BUILTIN_CLASSES, SLO, ConstraintSet, SLOClass

ENV_PREFIX = "SLICESERVE_"
_MAPPINGS = ("slo_classes", "scheduler", "controller")   # given as JSON in the environment


class SLOClassSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    utility: float = Field(default=1.0, gt=0)
    # An SLO expression (sliceserve.slo.parse_slo, class scope): per-request terms ("tpot <= 80ms") add to the
    # bounds above, percentile / throughput terms ("p99 ttft <= 500ms") are targets the controller watches.
    slo: str | None = None

    @model_validator(mode="after")
    def _expression(self) -> "SLOClassSettings":
        if self.slo is not None:
            for c in parse_class_slo(self.slo):
                if c.is_request_bound and getattr(self, f"{c.metric}_ms") is not None:
                    raise ValueError(f"{c.metric} is set twice: {c.metric}_ms and {c.text!r} in slo; keep one")
        return self

    def to_class(self, name: str) -> SLOClass:
        ms = lambda v: None if v is None else v / 1e3  # noqa: E731
        slo = SLO(ms(self.ttft_ms), ms(self.tpot_ms), ms(self.e2e_ms))
        if self.slo is not None:
            extra = parse_class_slo(self.slo).request_slo()
            slo = SLO(slo.ttft_s or extra.ttft_s, slo.tpot_s or extra.tpot_s, slo.e2e_s or extra.e2e_s)
        return SLOClass(name, slo, self.utility)

    def targets(self, scale: float = 1.0, ttft_scale: float | None = None) -> ConstraintSet:
        """The terms the controller enforces (latency percentiles and means, throughput); latency bounds
        scaled (TTFT bounds by `ttft_scale` when given)."""
        if self.slo is None:
            return ConstraintSet("class")
        return parse_class_slo(self.slo).targets().scaled(scale, ttft_scale)


def _builtin_classes() -> dict[str, SLOClassSettings]:
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    return {name: SLOClassSettings(ttft_ms=ms(c.slo.ttft_s), tpot_ms=ms(c.slo.tpot_s), e2e_ms=ms(c.slo.e2e_s),
                                   utility=c.utility) for name, c in BUILTIN_CLASSES.items()}


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = None                  # HF dir or GGUF file; None = the embedded SmolLM2-135M
    served_model_name: str | None = None      # the id /v1/models reports; default: the loader's name
    policy: str = "slice"
    backend: Literal["torch", "llamacpp"] = "torch"   # executor: PyTorch (sliceserve.model) or llama.cpp (GGUF)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: str = "cpu"
    dtype: str | None = None
    cuda_graphs: bool = True                  # torch on CUDA: decode steps replay graphs captured at start-up
    num_threads: int | None = Field(default=1, gt=0)   # one torch thread is the safe default (DESIGN.md)
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0)
    block_size: int = Field(default=16, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int = Field(default=16, gt=0)
    max_num_batched_tokens: int = Field(default=512, gt=0)
    # Bounded waiting queue: arrivals beyond it get 503.
    max_waiting: int = Field(default=64, gt=0)
    # A request without its first token after this many seconds (or its own TTFT bound, if longer) gets 503
    # (stream: an error event), so every request ends with an answer even when a utility-ordered policy keeps
    # serving others first. None: wait.
    max_queue_time_s: float | None = Field(default=60.0, gt=0)
    # A request whose SLO cannot be met under the current load: refuse (429 + Retry-After) or serve anyway.
    overload: Literal["reject", "best_effort"] = "best_effort"
    latency_profile: str | None = None         # JSON from `sliceserve profile`, or a built-in name
    calibrate: bool = True                     # measure a few iterations at start when no profile is given
    # Re-measure a latency term in idle gaps when its residual stays biased (sliceserve.core.latency_drift).
    idle_reprofile: bool = True
    default_max_tokens: int = Field(default=256, gt=0)   # chat requests without max_tokens
    default_slo_class: str | None = None       # class of requests that name none (None: no SLO)
    slo_classes: dict[str, SLOClassSettings] = Field(default_factory=_builtin_classes)
    # Multiplies every class bound: the built-in classes were written for a GPU (SLICE paper), a CPU needs more.
    slo_scale: float = Field(default=1.0, gt=0)
    # Multiplies TTFT bounds instead, when set: prefill may slow down more than decode (a CPU: 12x vs 4.5x).
    ttft_scale: float | None = Field(default=None, gt=0)
    scheduler: dict[str, Any] = Field(default_factory=dict)   # extra SchedulerConfig fields (slice_*, ...)
    # Share KV blocks of repeated prompt prefixes (greedy outputs proven identical; see docs/CONTROL.md).
    enable_prefix_caching: bool = True
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    server_slo: str | None = None              # resource targets of the whole server: "memory <= 2GB, power <= 15W"
    memory_limit: int | str | None = None      # "700MB": the same as `memory <= 700MB` in server_slo
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Exposure (docs/SERVER.md, security): see sliceserve/server/gate.py.
    api_key: str | None = Field(default=None, min_length=1, repr=False)   # Bearer key; /health stays open
    public_monitoring: bool = False            # /metrics and /v1/status without the key
    allowed_origins: list[str] = Field(default_factory=list)   # CORS; empty: no cross-origin browser access
    allowed_hosts: list[str] | None = None     # Host header values; None: the bind address's names
    max_body_bytes: int = Field(default=2 << 20, gt=0)        # larger request bodies get 413
    shutdown_timeout_s: float = Field(default=30.0, ge=0)     # SIGTERM: in-flight requests may finish this long

    @field_validator("allowed_origins", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """"a,b" (a flag or an environment variable) -> ["a", "b"]."""
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from sliceserve.core.policies import available_policies   # numpy only: checked before torch loads

        if value not in available_policies():
            raise ValueError(f"unknown policy {value!r}; available: {', '.join(available_policies())}")
        return value

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

    @field_validator("server_slo")
    @classmethod
    def _server_slo(cls, value: str | None) -> str | None:
        if value is not None:
            parse_server_slo(value)
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_memory(value)

    @model_validator(mode="after")
    def _one_memory_limit(self) -> "ServerSettings":
        slo = self.server_constraints().get("memory")
        if slo is not None and self.memory_limit is not None and int(slo.bound) != self.memory_limit:
            raise ValueError(f"memory limit given twice with different values: memory_limit {self.memory_limit} "
                             f"bytes and {slo.text!r} in server_slo; keep one")
        return self

    def server_constraints(self) -> ConstraintSet:
        return parse_server_slo(self.server_slo) if self.server_slo else ConstraintSet("server")

    def memory_limit_bytes(self) -> int | None:
        slo = self.server_constraints().get("memory")
        return self.memory_limit if slo is None else int(slo.bound)

    def class_targets(self) -> dict[str, ConstraintSet]:
        """Per class, the targets only the controller can enforce (percentiles, throughput)."""
        return {name: t for name, s in self.slo_classes.items() if len(t := s.targets(self.slo_scale, self.ttft_scale))}

    def classes(self) -> dict[str, SLOClass]:
        return {name: SLOClass(c.name, c.slo.scaled(self.slo_scale, self.ttft_scale), c.utility)
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
        sub = name.removeprefix("controller_")
        if name.startswith("controller_") and sub in ControllerSettings.model_fields:
            out.setdefault("controller", {})[sub] = value     # SLICESERVE_CONTROLLER_ENABLED=false
            continue
        if name not in ServerSettings.model_fields:
            raise ValueError(f"unknown environment setting {key}; known: "
                             + ", ".join(ENV_PREFIX + n.upper() for n in ServerSettings.model_fields))
        if name in _MAPPINGS:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{key} must be JSON: {exc}") from None
        out[name] = value
    return out


def load_settings(cli: Mapping[str, Any] | None = None, config_file: str | None = None,
                  environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Merge the sources (CLI values that are None count as not given) and validate once. Besides the
    fields, the CLI mapping may hold `class_slo` (a list of 'CLASS=EXPR') and `controller_enabled`."""
    merged: dict[str, Any] = {}
    sources = []
    if config_file:
        merged = deep_merge(merged, read_config_file(config_file), ("controller",))
        sources.append(f"file {config_file}")
    env = read_env(os.environ if environ is None else environ)
    if env:
        merged = deep_merge(merged, env, ("controller",))
        sources.append("environment")
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    class_slo = cli.pop("class_slo", None) or []
    if "controller_enabled" in cli:
        cli["controller"] = {"enabled": cli.pop("controller_enabled")}
    merged = deep_merge(merged, cli, ("controller",))
    if class_slo:
        base = merged.get("slo_classes")
        if base is None:
            base = {n: c.model_dump(exclude_none=True) for n, c in _builtin_classes().items()}
        if not isinstance(base, dict):
            raise ValueError("slo_classes must be a mapping of class name -> bounds")
        merged["slo_classes"] = apply_class_slo_flags(base, class_slo)
    try:
        return ServerSettings.model_validate(merged)
    except ValidationError as exc:
        raise ValueError(_describe(exc, ", ".join(sources + ["command line"]))) from None
