"""The live latency audit's rolling error (/v1/status `latency_model.rolling_error`)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from sliceserve.core.latency import IterationSample
from sliceserve.metrics.latency_audit import ROLLING_S, LatencyAudit


def _decode(seconds: float) -> IterationSample:
    return IterationSample(num_decode=4, decode_ctx=100.0, prefill_tokens=0, seconds=seconds)


def test_the_rolling_error_covers_the_last_seconds_not_only_the_last_iterations():
    audit = LatencyAudit(CollectorRegistry(), size=512)
    # 100 iterations 50% under-predicted (a competitor took the CPU), then 300 exact ones, 0.125 s apart: all 400
    # fit the 512-iteration buffer, but those of more than ROLLING_S seconds ago no longer count.
    for i in range(400):
        audit.record((_decode(0.01), 0.015 if i < 100 else 0.01), now=0.125 * i)
    err = audit.rolling_error()["decode"]
    assert err["n"] == ROLLING_S / 0.125 + 1 and err["p90_abs_error"] < 1e-9
    over_the_buffer = audit.rolling_error(window_s=1e9)["decode"]
    assert over_the_buffer["n"] == 400 and over_the_buffer["p90_abs_error"] > 0.4
