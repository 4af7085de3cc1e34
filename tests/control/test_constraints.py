"""SLO expression language: latency percentiles, throughput, memory and power targets, and clear errors."""
from __future__ import annotations

import pytest

from sliceserve.control.constraints import parse_constraints
from sliceserve.slo import SLO


def test_parses_every_kind_into_si_units():
    cs = parse_constraints("p99 ttft <= 500ms, p90 tpot <= 80ms and throughput >= 40 tok/s; e2e <= 2s")
    assert [(c.metric, c.bound, c.percentile) for c in cs] == [
        ("ttft", 0.5, 99.0), ("tpot", 0.08, 90.0), ("throughput", 40.0, None), ("e2e", 2.0, None)]
    assert cs.request_slo() == SLO(e2e_s=2.0)          # only per-request bounds reach the scheduler
    assert [c.text for c in cs.percentile_targets] == ["p99 ttft <= 500ms", "p90 tpot <= 80ms"]
    server = parse_constraints("memory <= 2GB, power <= 15W, p99.9 itl <= 250ms", scope="server")
    assert server.get("memory").bound == 2e9 and server.get("power").bound == 15.0
    assert server.get("itl", 99.9).bound == pytest.approx(0.25)
    assert parse_constraints("memory < 512MiB", "server").get("memory").bound == 512 * 2**20


def test_satisfied_by_respects_direction():
    lat, thr = parse_constraints("p99 ttft <= 500ms, throughput >= 40 tok/s")
    assert lat.satisfied_by(0.4) and not lat.satisfied_by(0.6)
    assert thr.satisfied_by(41) and not thr.satisfied_by(39)
    assert lat.satisfied_by(None) is None


@pytest.mark.parametrize("expr, message", [
    ("", "empty SLO expression"),
    ("ttft >= 5ms", "must be an upper bound"),
    ("throughput <= 5 tok/s", "must be a lower bound"),
    ("memory <= 2GB", "resource of the whole server"),
    ("p99 throughput >= 4 tok/s", "percentiles apply to latency"),
    ("p100 ttft <= 1s", "between 0 and 100"),
    ("ttft <= 5", "has no unit"),
    ("ttft <= 5 parsecs", "unknown time unit"),
    ("goodness <= 1s", "unknown SLO metric 'goodness'"),
    ("ttft <= 5ms, ttft <= 6ms", "sets ttft twice"),
    ("itl <= 5ms", "per-request itl bound"),
    ("ttft <= -5ms", "must be a positive"),
    ("ttft <= 5ms,", "empty term"),
    ("ttft is fast", "cannot parse SLO term"),
])
def test_errors_say_what_to_fix(expr, message):
    with pytest.raises(ValueError, match=message):
        parse_constraints(expr)


def test_server_scope_errors():
    with pytest.raises(ValueError, match="unknown memory unit"):
        parse_constraints("memory <= 2 parsecs", "server")
    with pytest.raises(ValueError, match="scope"):
        parse_constraints("ttft <= 1s", "galaxy")
