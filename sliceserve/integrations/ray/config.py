"""Scale-out settings: how many engine replicas, what each may use, and how requests are routed.

The engine settings of every replica are the single-box `ServerSettings` (docs/SERVER.md); these are
only the Ray-side knobs. Both come from one mapping so a `serve run` config file can hold them together
(see `app_builder` in deployment.py and docs/SCALE_OUT.md).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sliceserve.server.settings import ServerSettings, load_settings


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(default=2, ge=1)
    # Edge boxes are small: half a CPU of Ray's accounting per engine replica lets two share a 2-core box.
    num_cpus_per_replica: float = Field(default=0.5, ge=0)
    num_gpus_per_replica: float = Field(default=0.0, ge=0)
    ingress_num_cpus: float = Field(default=0.25, ge=0)
    # "slo": SLORequestRouter (router.py); "default": Ray Serve's power-of-two-choices, for comparison.
    routing: Literal["slo", "default"] = "slo"
    # How often each replica's load snapshot reaches the router; the router also counts what it sent since.
    stats_period_s: float = Field(default=0.2, gt=0)
    # In flight per replica, above the engine's own bounded queue (max_num_seqs + max_waiting) is pointless.
    max_ongoing_requests: int = Field(default=96, ge=1)
    # A replica that dies before any response byte left the ingress: the request is resent this many times.
    max_attempts: int = Field(default=3, ge=1)
    # HTTP front of the Ray cluster (Serve's proxy); the engine settings' host/port are not used under Ray.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)


def split_settings(config: Mapping[str, Any]) -> tuple[RaySettings, ServerSettings]:
    """{"ray": {...Ray knobs...}, ...engine settings...} -> (RaySettings, ServerSettings); ValueError on typos."""
    config = dict(config)
    ray_part = config.pop("ray", None) or {}
    if not isinstance(ray_part, Mapping):
        raise ValueError(f"'ray' settings must be a mapping, got {type(ray_part).__name__}")
    try:
        ray_settings = RaySettings.model_validate(dict(ray_part))
    except ValidationError as exc:
        parts = "; ".join(f"ray.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid Ray settings: {parts}; known: {', '.join(RaySettings.model_fields)}") from None
    return ray_settings, load_settings(config, environ={})
