"""How a workload preset's SLO bounds stretch to the device a benchmark runs on.

The presets were written for `paper-4060ti` (the SLICE paper's RTX 4060 Ti table). A slower device gets
looser bounds, by two factors:
- `slo`: TPOT and E2E bounds, by how much slower one decode step is: l(1) here / l(1) there, both at the
  reference prompt's context (256 tokens). Not at context 0: no decode step runs there, and a quick profile
  (decode measured at contexts 64 and 256) extrapolates it: on the 2-vCPU CPU one read l(1, 0) = 2.4 ms where
  its l(1, 256) read 9.8 ms (the fit had traded the level against the context slope; the ten quick profiles
  before it read 9.8-20.3 ms at context 0), which scaled every TPOT bound below one decode step.
- `ttft`: TTFT bounds, by how much slower a prompt is: p(256) here / p(256) there, and never less than the
  decode factor (a first token also waits for the iteration in flight). One factor for both under-stated
  TTFT on CPUs: prefill there costs 12-13x the reference while a decode step costs 4.5x, so a real-time
  prompt of 256 tokens took 1.07 s of its 2.25 s TTFT before any queueing (docs/SERVER.md), where on the
  reference it takes 84 ms of 500 ms.
A factor given on the command line wins; `--slo-scale` alone scales every bound by that one factor (as
before the TTFT factor existed).
"""
from __future__ import annotations

from dataclasses import dataclass

from sliceserve.core.latency import BUILTIN_PROFILES, LatencyModel

REFERENCE_PROFILE = "paper-4060ti"
REFERENCE_PROMPT_TOKENS = 256
REFERENCE_L1_S = BUILTIN_PROFILES[REFERENCE_PROFILE].decode_time(1, REFERENCE_PROMPT_TOKENS)
REFERENCE_PREFILL_S = BUILTIN_PROFILES[REFERENCE_PROFILE].prefill_time(REFERENCE_PROMPT_TOKENS)
SLO_SCALE_RULE = (f"TPOT/E2E x l(1) here / l(1) of {REFERENCE_PROFILE} ({REFERENCE_L1_S * 1e3:g} ms), at context "
                  f"{REFERENCE_PROMPT_TOKENS}; TTFT x "
                  f"max(that, p({REFERENCE_PROMPT_TOKENS}) here / {REFERENCE_PREFILL_S * 1e3:g} ms)")


@dataclass(frozen=True)
class DeviceScale:
    slo: float    # multiplies TPOT and E2E bounds
    ttft: float   # multiplies TTFT bounds
    rule: str     # how they were chosen, for the result's config

    def describe(self) -> dict:
        return {"slo_scale": self.slo, "ttft_scale": self.ttft, "slo_scale_rule": self.rule}

    def __str__(self) -> str:
        if self.ttft == self.slo:
            return f"SLO scale {self.slo:.3g} ({self.rule})"
        return f"SLO scale {self.slo:.3g}, TTFT scale {self.ttft:.3g} ({self.rule})"


def device_scale(decode_l1_s: float | None, prefill_s: float | None, *, slo_scale: float | None = None,
                 ttft_scale: float | None = None) -> DeviceScale:
    """Factors for a device whose l(1) (at context 256) is `decode_l1_s` and p(256) is `prefill_s` (None: unknown)."""
    for name, value in (("--slo-scale", slo_scale), ("--ttft-scale", ttft_scale)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if slo_scale is not None:
        ttft = ttft_scale if ttft_scale is not None else slo_scale
        return DeviceScale(slo_scale, ttft, "given (--slo-scale" + (", --ttft-scale)" if ttft_scale else ")"))
    if not decode_l1_s:
        raise ValueError("the device's decode time is unknown; pass --slo-scale")
    slo = decode_l1_s / REFERENCE_L1_S
    if ttft_scale is not None:
        return DeviceScale(slo, ttft_scale, "derived (TPOT/E2E), given (--ttft-scale)")
    ttft = max(slo, prefill_s / REFERENCE_PREFILL_S) if prefill_s else slo
    return DeviceScale(slo, ttft, "derived: " + SLO_SCALE_RULE)


def latency_scale(latency: LatencyModel, *, slo_scale: float | None = None,
                  ttft_scale: float | None = None) -> DeviceScale:
    return device_scale(latency.decode_time(1, REFERENCE_PROMPT_TOKENS), latency.prefill_time(REFERENCE_PROMPT_TOKENS),
                        slo_scale=slo_scale, ttft_scale=ttft_scale)
