"""Shared builders for SLICE tests (CPU only, no torch)."""
from __future__ import annotations

import pytest

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.request import Request, SamplingParams
from sliceserve.slo import SLO


def make_req(rid: str, arrival: float = 0.0, prompt: int = 32, max_tokens: int = 40, tpot: float | None = 0.05,
             ttft: float | None = 0.5, e2e: float | None = None, utility: float = 100.0,
             cls: str = "realtime") -> Request:
    return Request(rid, [1] * prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True), arrival,
                   slo=SLO(ttft, tpot, e2e), slo_class=cls, utility=utility)


def make_slice(latency: LatencyModel | None = None, **overrides):
    """SLICE as configured, except that requests whose TTFT is lost are kept as best effort unless the
    test asks otherwise: these tests check that mask, guard and backfill serve everything (the rejection
    of lost requests, `slice_reject_lost` and `slice_drop_lost`, has its own tests in test_reject_lost.py and
    test_drop_lost.py)."""
    overrides.setdefault("slice_reject_lost", False)
    overrides.setdefault("slice_drop_lost", "off")
    cfg = SchedulerConfig(policy="slice").with_overrides(**overrides)
    return make_scheduler("slice", cfg, latency or load_profile("paper-4060ti"))


@pytest.fixture
def paper() -> LatencyModel:
    return load_profile("paper-4060ti")
