"""Scheduling policies, registered by name with `@register`. Each module's docstring names its paper and
parameters; `interface.Policy` is what every policy declares to the layers outside core/."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies.interface import Policy

_REGISTRY: dict[str, type[Policy]] = {}
_loaded = False
P = TypeVar("P", bound=type[Policy])


def register(name: str) -> Callable[[P], P]:
    def deco(cls: P) -> P:
        if not issubclass(cls, Policy):
            raise TypeError(f"policy {name!r}: {cls.__name__} must subclass core.policies.interface.Policy")
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"policy name {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _load_all() -> None:
    """Import every module of this package once, so a new module only needs `@register` to appear."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def available_policies() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    """The class registered as `name` (what it declares: `orders_by_utility`, `knobs`)."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_scheduler(name: str, config: SchedulerConfig, latency: LatencyModel) -> Policy:
    return policy_class(name)(config, latency)


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
