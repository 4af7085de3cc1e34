"""What a policy declares to the layers outside core/, so that none of them lists policy names.

Every registered policy is a `Policy` (a `Scheduler` plus these declarations):
- `orders_by_utility`: the policy serves work of higher utility ahead of arrival order (SLICE selects by
  utility density and leaves the rest best effort). Admission estimates (server/admission.py) and the
  Ray router (integrations/ray/routing.py) then count only work of at least a request's utility as ahead
  of it; for the others (FCFS and friends) everything admitted is ahead.
- `paces_decodes`: the policy decodes each request at the rate its TPOT asks rather than in every step
  (SLICE's decode mask), so the TPOT a newcomer would get depends on the rates of the work ahead of it,
  not on how many requests run (core/feasibility.py).
- `admission_key(req)`: where the policy would place `req` among admitted work, from the request alone
  (smaller first), so admission's overload estimate counts only what the policy really serves first; None
  (the default) when the policy declares no such order.
- `knobs`: the settings a controller (control/) may turn while the policy serves, each with its bounds.
  `set_knob` checks the bounds and applies the value where the policy re-reads it on its next plan; a
  knob a policy does not declare is unsupported (KeyError), never faked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from sliceserve.core.scheduler import Scheduler
from sliceserve.request import Request


@dataclass(frozen=True, slots=True)
class Knob:
    """A run-time setting: values in [low, high] (high excluded when `high_open`); integers when `integer`;
    one value per request when `per_request`."""

    name: str
    low: float
    high: float
    doc: str
    high_open: bool = False
    integer: bool = False
    per_request: bool = False

    def check(self, value: float) -> None:
        above = value >= self.high if self.high_open else value > self.high
        if value < self.low or above or (self.integer and value != int(value)):
            bound = f"[{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            raise ValueError(f"knob {self.name} must be {'an integer ' if self.integer else ''}in {bound}, "
                             f"got {value!r}")


# Every policy caps the sequences per iteration (the controller's power knob).
BATCH_CAP = Knob("max_num_seqs", 1, math.inf, "sequences per iteration (the power knob)", integer=True)


class Policy(Scheduler):
    """A scheduling policy: `plan(now)` (from `Scheduler`) plus what it declares to outer layers."""

    orders_by_utility: ClassVar[bool] = False
    paces_decodes: ClassVar[bool] = False
    knobs: ClassVar[tuple[Knob, ...]] = (BATCH_CAP,)

    def admission_key(self, req: Request) -> tuple | None:
        return None

    @classmethod
    def knob(cls, name: str) -> Knob | None:
        return next((k for k in cls.knobs if k.name == name), None)

    def get_knob(self, name: str, req_id: str | None = None) -> float:
        self._declared(name, req_id)
        return self._read_knob(name, req_id)

    def set_knob(self, name: str, value: float, req_id: str | None = None) -> None:
        """Turn knob `name` (for request `req_id` if it is per request) to `value`, within its bounds."""
        self._declared(name, req_id).check(value)
        self._apply_knob(name, value, req_id)

    def _declared(self, name: str, req_id: str | None) -> Knob:
        knob = self.knob(name)
        if knob is None:
            raise KeyError(f"policy {self.name!r} has no knob {name!r}; it has: "
                           f"{', '.join(k.name for k in self.knobs)}")
        if knob.per_request != (req_id is not None):
            raise ValueError(f"knob {name} is {'' if knob.per_request else 'not '}per request")
        return knob

    # A policy with knobs of its own overrides these two, and passes the rest on to super().
    def _read_knob(self, name: str, req_id: str | None) -> float:
        if name == BATCH_CAP.name:
            return self.config.max_num_seqs
        raise KeyError(name)

    def _apply_knob(self, name: str, value: float, req_id: str | None) -> None:
        if name != BATCH_CAP.name:
            raise KeyError(name)
        # The config stays frozen: a new one replaces it, validated like any other.
        self.config = self.config.with_overrides(max_num_seqs=int(value))
