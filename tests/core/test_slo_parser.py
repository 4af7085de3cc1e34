import pytest

from sliceserve.slo import SLO, parse_duration, parse_slo


@pytest.mark.parametrize("expr, expected", [
    ("ttft<=200ms,tpot<=50ms,e2e<=5s", SLO(ttft_s=0.2, tpot_s=0.05, e2e_s=5.0)),
    ("tpot<50ms", SLO(tpot_s=0.05)),
    (" TTFT <= 1.5 s ", SLO(ttft_s=1.5)),
    ("e2e<=250000us", SLO(e2e_s=0.25)),
    ("ttft<=1e3ms", SLO(ttft_s=1.0)),
])
def test_valid_expressions(expr, expected):
    got = parse_slo(expr)
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        want, value = getattr(expected, name), getattr(got, name)
        assert (value is None) if want is None else value == pytest.approx(want)


def test_round_trip_through_to_expr():
    slo = parse_slo("ttft<=200ms,tpot<=50ms,e2e<=5s")
    assert parse_slo(slo.to_expr()) == slo


@pytest.mark.parametrize("expr, fragment", [
    ("latency<=5ms", "unknown SLO metric"),
    ("tpot<=0ms", "positive"),
    ("tpot<=-5ms", "positive"),
    ("tpot<=5min", "unknown time unit"),
    ("tpot<=50", "no unit"),
    ("tpot<=50ms,tpot<=60ms", "twice"),
    ("", "empty"),
    ("tpot>=50ms", "cannot parse"),
])
def test_rejects_nonsense_with_clear_message(expr, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_slo(expr)


def test_duration_parser():
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("3s") == 3.0
    with pytest.raises(ValueError, match="unknown time unit"):
        parse_duration("3")
    with pytest.raises(ValueError):
        parse_duration("fast")


def test_slo_scaling_and_bounds():
    assert SLO(tpot_s=0.05).scaled(2).tpot_s == pytest.approx(0.1)
    with pytest.raises(ValueError):
        SLO(ttft_s=0.0)
    with pytest.raises(ValueError):
        SLO(tpot_s=0.05).scaled(0)
