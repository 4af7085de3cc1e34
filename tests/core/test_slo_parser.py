"""The one SLO grammar (sliceserve.slo.parse_slo): every term kind, units, scopes, errors, and round trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sliceserve.slo import METRICS, SLO, Constraint, parse_duration, parse_size, parse_slo
from sliceserve.slo.units import POWER, RATE, SIZE, TIME


@pytest.mark.parametrize("expr, metric, bound, percentile, scopes", [
    ("p99 ttft <= 350ms", "ttft", 0.35, 99.0, ("class",)),
    ("p90 tpot<=0.08s", "tpot", 0.08, 90.0, ("class",)),
    ("throughput >= 25 tok/s", "throughput", 25.0, None, ("class",)),
    ("memory <= 1.5GB", "memory", 1.5e9, None, ("server",)),
    ("power <= 9W", "power", 9.0, None, ("server",)),
    ("tpot < 50ms", "tpot", 0.05, None, ("request", "class")),
    (" TTFT <= 1.5 s ", "ttft", 1.5, None, ("request", "class")),
    ("e2e<=250000us", "e2e", 0.25, None, ("request", "class")),
    ("P99.9 itl <= 250ms", "itl", 0.25, 99.9, ("class",)),
    ("memory < 512MiB", "memory", 512 * 2**20, None, ("server",)),
    ("power <= 900mW", "power", 0.9, None, ("server",)),
])
def test_the_issues_terms_parse_into_si_units_with_their_scopes(expr, metric, bound, percentile, scopes):
    (c,) = parse_slo(expr)
    assert (c.metric, c.percentile, c.mean, c.scopes) == (metric, percentile, False, scopes)
    assert c.bound == pytest.approx(bound)


def test_a_mixed_expression_splits_into_request_bounds_and_controller_targets():
    cs = parse_slo("p99 ttft <= 500ms, mean tpot <= 80ms and throughput >= 40 tok/s; e2e <= 2s, ttft<=1s")
    assert cs.request_slo() == SLO(ttft_s=1.0, e2e_s=2.0)       # what the scheduler enforces per request
    assert [c.text for c in cs.targets()] == ["p99 ttft <= 500ms", "mean tpot <= 80ms", "throughput >= 40 tok/s"]
    assert cs.get("tpot", mean=True).bound == pytest.approx(0.08) and cs.get("tpot") is None
    scaled = cs.scaled(2.0, ttft_factor=3.0)
    assert scaled.get("ttft", 99).bound == pytest.approx(1.5) and scaled.get("tpot", mean=True).bound == pytest.approx(0.16)
    assert scaled.get("throughput").bound == 40.0                # throughput is no latency: not scaled
    # The old per-request form reads as before.
    assert parse_slo("ttft<=200ms,tpot<=50ms,e2e<=5s").request_slo() == SLO(0.2, 0.05, 5.0)
    assert parse_slo(SLO(0.2, 0.05, 5.0).to_expr()).request_slo() == SLO(0.2, 0.05, 5.0)


@pytest.mark.parametrize("expr, message", [
    ("p101 ttft <= 1ms", r"percentile p101 in 'p101 ttft <= 1ms' must be between 0 and 100"),
    ("p0 ttft <= 1ms", "must be between 0 and 100"),
    ("ttft <= -3ms", r"bound in 'ttft <= -3ms' must be a positive number"),
    ("tpot<=0ms", "must be a positive number"),
    ("memory <= 2 parsecs", "unknown memory unit 'parsecs'"),
    ("latency ~ 5", "unknown SLO metric 'latency'"),
    ("ttft ~ 5ms", r"cannot parse SLO term 'ttft ~ 5ms': after 'ttft' write <="),
    ("ttft is fast", "cannot parse SLO term"),
    ("ttft <= 5", "has no unit; write e.g. ttft <= 5ms"),
    ("tpot<=5min", "unknown time unit 'min'"),
    ("power <= 9MW", "unknown power unit 'MW'"),
    ("ttft >= 5ms", "must be an upper bound"),
    ("throughput <= 5 tok/s", "must be a lower bound"),
    ("p99 throughput >= 4 tok/s", "percentiles and means apply to latency metrics"),
    ("mean memory <= 1GB", "percentiles and means apply to latency metrics"),
    ("px ttft <= 1s", "'px' is no statistic"),
    ("q99 ttft <= 1s", "unknown SLO metric 'q99'"),
    ("itl <= 5ms", "per-request itl bound is not enforceable in any scope"),
    ("tpot<=50ms,tpot<60ms", "sets tpot twice"),
    ("p99 ttft <= 1s, P99 ttft <= 2s", "sets p99 ttft twice"),
    ("ttft <= 5ms,", "empty term"),
    ("", "empty SLO expression"),
])
def test_rejections_say_what_is_wrong(expr, message):
    with pytest.raises(ValueError, match=message):
        parse_slo(expr)


@pytest.mark.parametrize("expr, scope, message", [
    ("p99 ttft <= 350ms", "request", r"cannot be enforced in scope 'request' \(only in 'class'\): a percentile"),
    ("mean tpot <= 80ms", "request", "scope 'request'.*--class-slo"),
    ("throughput >= 25 tok/s", "request", "scope 'request'.*throughput is measured over a class"),
    ("memory <= 1.5GB", "class", "scope 'class'.*memory is a resource of the whole server"),
    ("power <= 9W", "request", "scope 'request'.*--server-slo"),
    ("tpot <= 50ms", "server", "scope 'server'.*put latency and throughput targets on a class"),
    ("throughput >= 25 tok/s", "server", "scope 'server'"),
    ("ttft <= 1s", "galaxy", "SLO scope must be one of request, class, server"),
])
def test_a_term_outside_the_scopes_enforcing_it_is_an_error_naming_the_scope(expr, scope, message):
    parse_slo(expr)                        # valid text ...
    with pytest.raises(ValueError, match=message):
        parse_slo(expr, scope)             # ... but not enforceable there


def test_each_scope_takes_its_terms():
    assert parse_slo("ttft <= 1s, tpot <= 50ms", "request").scope == "request"
    assert len(parse_slo("p99 ttft <= 1s, tpot <= 50ms, throughput >= 3 tok/s", "class")) == 3
    assert parse_slo("memory <= 2GB, power <= 15W", "server").get("power").bound == 15.0


def test_unit_helpers():
    assert parse_duration("200ms") == pytest.approx(0.2) and parse_duration("3s") == 3.0
    assert parse_size("1.5GiB") == 1.5 * 2**30 and parse_size("700mb") == 7e8
    for bad, message in (("3", "no unit"), ("fast", "cannot read a time"), ("-1s", "positive")):
        with pytest.raises(ValueError, match=message):
            parse_duration(bad)


def test_slo_scaling_and_bounds():
    assert SLO(tpot_s=0.05).scaled(2).tpot_s == pytest.approx(0.1)
    with pytest.raises(ValueError):
        SLO(ttft_s=0.0)
    with pytest.raises(ValueError):
        SLO(tpot_s=0.05).scaled(0)


# --- properties ------------------------------------------------------------------------------------------
_DIM_RANGE = {d.name: r for d, r in ((TIME, (1e-6, 1e4)), (RATE, (1e-3, 1e6)), (SIZE, (1.0, 1e13)), (POWER, (1e-3, 1e4)))}
_positive = lambda lo, hi: st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)  # noqa: E731


@st.composite
def constraints(draw) -> Constraint:
    metric = draw(st.sampled_from(sorted(METRICS)))
    spec = METRICS[metric]
    bound = draw(_positive(*_DIM_RANGE[spec.dimension.name]))
    percentile, mean = None, False
    if spec.latency:
        stat = draw(st.sampled_from(["none", "mean", "pct"] if spec.per_request else ["mean", "pct"]))
        mean = stat == "mean"
        if stat == "pct":
            percentile = draw(st.floats(min_value=0.0, max_value=100.0, exclude_min=True, exclude_max=True))
    return Constraint(metric, bound, percentile, mean)


@settings(max_examples=300, deadline=None)
@given(constraints())
def test_format_then_parse_gives_the_same_constraint(c):
    (back,) = parse_slo(c.format())
    assert back == c and back.scopes == c.scopes


@settings(max_examples=100, deadline=None)
@given(st.lists(constraints(), min_size=1, max_size=5, unique_by=lambda c: (c.metric, c.percentile, c.mean)))
def test_expressions_round_trip_and_scope_checks_agree_with_each_term(cs):
    parsed = parse_slo(", ".join(c.format() for c in cs))
    assert tuple(parsed) == tuple(cs)
    for scope in ("request", "class", "server"):
        if all(scope in c.scopes for c in cs):
            assert parse_slo(parsed.format(), scope).scope == scope
        else:
            with pytest.raises(ValueError, match=f"scope '{scope}'"):
                parse_slo(parsed.format(), scope)


def _op(c: Constraint) -> str:
    return "<=" if c.is_upper else ">="


@settings(max_examples=200, deadline=None)
@given(c=constraints(), value=st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
def test_non_positive_bounds_are_rejected(c, value):
    unit = next(iter(c.spec.dimension.units))
    with pytest.raises(ValueError, match="must be a positive number"):
        parse_slo(f"{c.metric} {_op(c)} {value!r} {unit}")


@settings(max_examples=200, deadline=None)
@given(metric=st.sampled_from(["ttft", "tpot", "e2e", "itl"]),
       pct=st.one_of(st.floats(min_value=100.0, max_value=1e6), st.just(0.0)))
def test_percentiles_outside_0_100_are_rejected(metric, pct):
    with pytest.raises(ValueError, match="between 0 and 100"):
        parse_slo(f"p{pct!r} {metric} <= 5ms")


@settings(max_examples=200, deadline=None)
@given(c=constraints(), unit=st.text(alphabet="abcdefghijklmnopqrstuvwxyzAGKMW/", min_size=1, max_size=6))
def test_unknown_units_are_rejected_naming_the_unit(c, unit):
    dim = c.spec.dimension
    known = set(dim.units) if dim.case_sensitive else {u.lower() for u in dim.units}
    if (unit if dim.case_sensitive else unit.lower()) in known:
        return
    with pytest.raises(ValueError, match=f"unknown {dim.name} unit"):
        parse_slo(f"{c.metric} {_op(c)} {c.bound!r} {unit}")


@settings(max_examples=200, deadline=None)
@given(name=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: n not in METRICS))
def test_unknown_metrics_are_rejected_by_name(name):
    with pytest.raises(ValueError, match=f"unknown SLO metric '{name}'"):
        parse_slo(f"{name} <= 5ms")


@pytest.mark.parametrize("text, seconds", [("ttft <= 350ms", 0.35), ("tpot <= 80ms", 0.08), ("e2e <= 300us", 0.0003)])
def test_sub_units_convert_to_the_nearest_float(text: str, seconds: float) -> None:
    # "350ms" must equal a bound written as 0.35 s, not 0.35000000000000003 (a multiplication by 1e-3).
    assert parse_slo(text).constraints[0].bound == seconds
