"""The controller's settings (`controller:` in the server's YAML, ControllerSettings) and their checks."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControllerConfig:
    enabled: bool = True
    every: int = 32                        # iterations per control cycle
    calibrate: bool = True                 # False: the latency model's online calibration is switched off
    calibration_tolerance: float = 0.05    # log a calibrate decision when a factor moved by more than 5%
    target_attainment: float = 0.9         # a class below this (recent window) is at risk
    min_class_samples: int = 5             # finished requests before a class's attainment is trusted
    margin_min: float = 0.05
    margin_max: float = 0.3
    margin_step: float = 0.05
    max_boost: int = 4                     # extra decode steps per cycle the controller may grant one request
    max_shed_utility: float = 10.0         # never refuse classes with utility >= this
    relax_after: int = 3                   # healthy cycles before a knob steps back
    min_batch_cap: int = 1                 # power target: never cap the batch below this
    window: int = 100                      # finished requests per class in the rolling window
    attainment_window: int = 20            # the most recent of those that decide "at risk" (react fast)

    def validate(self) -> "ControllerConfig":
        if not isinstance(self.every, int) or self.every <= 0:
            raise ValueError(f"controller every must be a positive number of iterations, got {self.every!r}")
        if not 0 < self.target_attainment <= 1:
            raise ValueError(f"controller target_attainment must be in (0, 1], got {self.target_attainment!r}")
        if not 0 <= self.margin_min <= self.margin_max < 1:
            raise ValueError("controller margins must satisfy 0 <= margin_min <= margin_max < 1, got "
                             f"{self.margin_min!r}..{self.margin_max!r}")
        for name in ("margin_step", "calibration_tolerance", "max_shed_utility"):
            if not getattr(self, name) > 0:
                raise ValueError(f"controller {name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_boost", "relax_after", "min_batch_cap", "window", "min_class_samples",
                     "attainment_window"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"controller {name} must be an integer >= 0, got {getattr(self, name)!r}")
        return self
