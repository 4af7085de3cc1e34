"""Server settings for the control package: the feedback controller's switch and bounds, SLO expressions
for classes (`p99 ttft <= 500ms, tpot <= 80ms`) and for the whole server (`memory <= 2GB, power <= 15W`),
and the memory limit. Parsing goes through sliceserve.slo.parse_slo (the one SLO grammar) at the scope that
enforces the terms, so anything else stops the server with a message saying what to write and where.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sliceserve.control.controller import ControllerConfig
from sliceserve.slo import ConstraintSet, parse_size, parse_slo


class ControllerSettings(BaseModel):
    """`controller:` in the YAML file, SLICESERVE_CONTROLLER_<FIELD> in the environment. Defaults and
    meanings are ControllerConfig's (sliceserve/control/config.py)."""
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    every: int = Field(default=32, gt=0)                      # iterations per control cycle
    calibrate: bool = True
    target_attainment: float = Field(default=0.9, gt=0, le=1)
    margin_min: float = Field(default=0.05, ge=0, lt=1)
    margin_max: float = Field(default=0.3, ge=0, lt=1)
    margin_step: float = Field(default=0.05, gt=0)
    max_boost: int = Field(default=4, ge=0)
    max_shed_utility: float = Field(default=10.0, gt=0)
    relax_after: int = Field(default=3, ge=0)
    min_batch_cap: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "ControllerSettings":
        if self.margin_min > self.margin_max:
            raise ValueError(f"margin_min {self.margin_min} must not exceed margin_max {self.margin_max}")
        return self

    def to_config(self) -> ControllerConfig:
        return ControllerConfig(**self.model_dump()).validate()


def parse_class_slo(expr: str) -> ConstraintSet:
    """A class's SLO expression; the per-request terms become its SLO, the percentile and throughput terms
    go to the controller."""
    return parse_slo(expr, scope="class")


def parse_server_slo(expr: str) -> ConstraintSet:
    """The whole server's SLO: resource targets only. Latency and throughput targets belong to a class
    (one server serves classes with different bounds), so the server scope refuses them with that advice."""
    return parse_slo(expr, scope="server")


def parse_memory(value: Any) -> int:
    """'700MB', '1.5GiB' or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"memory_limit must be a size like 700MB or 1GiB, got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ValueError(f"memory_limit must be positive, got {value!r}")
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return parse_memory(int(text))
    try:
        return int(parse_size(text))
    except ValueError:
        raise ValueError(f"memory_limit {text!r}: write a size like 700MB, 1GiB or a number of bytes") from None


def apply_class_slo_flags(slo_classes: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    """`--class-slo NAME=EXPR` (repeatable): set class NAME's SLO expression, creating the class if needed."""
    out = {name: dict(spec) for name, spec in slo_classes.items()}
    for flag in flags:
        name, sep, expr = flag.partition("=")
        # '=' inside '<=' or '>=' is not the separator: a flag like 'p99 ttft <= 1s' has no class name.
        if not sep or not name.strip() or name.rstrip().endswith(("<", ">")):
            raise ValueError(f"--class-slo {flag!r}: write CLASS=EXPR, e.g. --class-slo 'realtime=p99 ttft <= 500ms'")
        parse_class_slo(expr)   # fail here, naming the flag's text
        out.setdefault(name.strip(), {})["slo"] = expr.strip()
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Merge `update` into `base`; for the mapping-valued `keys` merge one level deeper, so an environment
    variable setting controller.enabled keeps the file's controller.every."""
    out = dict(base)
    for k, v in update.items():
        if k in keys and isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out
