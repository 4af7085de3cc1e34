"""Scheduling policies, registered by name. Each module's docstring names its paper and parameters."""
from __future__ import annotations

import importlib
from typing import Callable

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.scheduler import Scheduler

_REGISTRY: dict[str, type[Scheduler]] = {}
# Modules imported on first lookup, so a policy only needs `@register` to appear.
_MODULES = ("vllm", "orca", "fastserve", "slice", "sarathi", "annealing", "sliding", "scorpio", "qoserve")


def register(name: str) -> Callable[[type[Scheduler]], type[Scheduler]]:
    def deco(cls: type[Scheduler]) -> type[Scheduler]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _load_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise


def available_policies() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def make_scheduler(name: str, config: SchedulerConfig, latency: LatencyModel) -> Scheduler:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](config, latency)


def parse_policy_list(text: str) -> list[str]:
    """'slice,orca' -> ['slice', 'orca'], each checked against the registry."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ValueError("no policy given; available: " + ", ".join(available_policies()))
    known = available_policies()
    for n in names:
        if n not in known:
            raise ValueError(f"unknown policy {n!r}; available: {', '.join(known)}")
    return names
