"""Workload generation: length distributions, arrival processes, presets, SLO scaling, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sliceserve.slo import SLO
from sliceserve.workload import (PRESETS, arrival_times, generate, get_preset, parse_length_dist, parse_mix_weights,
                                 to_requests, with_slo_overrides)


# --- lengths -------------------------------------------------------------------------------------------
def test_fixed_and_uniform_lengths() -> None:
    rng = np.random.default_rng(0)
    assert set(parse_length_dist("fixed:7").sample(rng, 100)) == {7}
    u = parse_length_dist("uniform:10:20").sample(rng, 20_000)
    assert u.min() == 10 and u.max() == 20  # both ends included
    assert abs(u.mean() - 15) < 0.1


def test_lognormal_mean_median_and_cap() -> None:
    rng = np.random.default_rng(1)
    free = parse_length_dist("lognormal:200:0.5").sample(rng, 50_000)
    assert abs(np.median(free) - 200) / 200 < 0.02
    assert abs(free.mean() - 200 * math.exp(0.5**2 / 2)) / free.mean() < 0.02
    capped = parse_length_dist("lognormal:200:1.5:400").sample(rng, 50_000)
    assert capped.max() == 400 and capped.min() >= 1


@pytest.mark.parametrize("bad", ["fixed", "fixed:0", "fixed:x", "uniform:5:2", "uniform:1", "lognormal:100",
                                 "lognormal:100:-1", "lognormal:100:0.5:50", "normal:3:4", ""])
def test_bad_length_specs_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="length distribution"):
        parse_length_dist(bad)


# --- arrivals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("burstiness", [1.0, 0.5, 4.0])
def test_arrival_rate_is_right_for_any_burstiness(burstiness: float) -> None:
    times = arrival_times(5.0, 2_000.0, np.random.default_rng(3), burstiness)
    assert abs(len(times) / 2_000.0 - 5.0) < 0.25
    assert times == sorted(times) and 0 < times[0] and times[-1] < 2_000.0


def test_burstiness_changes_gap_dispersion() -> None:
    """Gamma gaps with shape k have coefficient of variation 1/sqrt(k): 1 for Poisson."""
    cv = {}
    for k in (0.25, 1.0, 4.0):
        gaps = np.diff(arrival_times(10.0, 3_000.0, np.random.default_rng(5), k))
        cv[k] = gaps.std() / gaps.mean()
    assert abs(cv[1.0] - 1.0) < 0.05
    assert abs(cv[0.25] - 2.0) < 0.2 and abs(cv[4.0] - 0.5) < 0.05


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_bad_rates_raise(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        arrival_times(rate, 10.0, np.random.default_rng(0), burst)


# --- presets -------------------------------------------------------------------------------------------
def test_edge_mix_matches_the_specification() -> None:
    mix = {m.name: m for m in get_preset("edge-mix")}
    assert {n: (m.weight, m.slo_class.slo, m.slo_class.utility) for n, m in mix.items()} == {
        "realtime": (0.2, SLO(0.5, 0.05), 100.0),
        "nrt-100": (0.3, SLO(1.0, 0.1), 1.0),
        "nrt-120": (0.3, SLO(2.0, 0.12), 1.0),
        "nrt-250": (0.2, SLO(5.0, 0.25), 1.0),
    }
    assert str(mix["nrt-250"].prompt) == "lognormal:512:0.5:2048"


def test_edge_mix_class_shares_and_lengths_on_a_large_sample() -> None:
    w = generate("edge-mix", 20.0, 1_000.0, seed=2)
    n = len(w.specs)
    shares = {c: sum(s.slo_class == c for s in w.specs) / n for c in w.classes}
    for name, expected in {"realtime": 0.2, "nrt-100": 0.3, "nrt-120": 0.3, "nrt-250": 0.2}.items():
        assert abs(shares[name] - expected) < 0.02
    rt = [s for s in w.specs if s.slo_class == "realtime"]
    assert min(s.prompt_len for s in rt) >= 32 and max(s.prompt_len for s in rt) <= 256
    assert all(16 <= s.output_len <= 64 for s in rt)
    assert max(s.prompt_len for s in w.specs if s.slo_class == "nrt-250") <= 2048


def test_slo_scale_multiplies_every_bound() -> None:
    base = {m.name: m.slo_class.slo for m in get_preset("edge-mix")}
    scaled = {m.name: m.slo_class.slo for m in get_preset("edge-mix", slo_scale=2.5)}
    for name, slo in base.items():
        assert scaled[name].ttft_s == pytest.approx(slo.ttft_s * 2.5)
        assert scaled[name].tpot_s == pytest.approx(slo.tpot_s * 2.5)
    batch = get_preset("batch", slo_scale=3.0)[0].slo_class.slo
    assert batch.e2e_s == pytest.approx(180.0)


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        get_preset("nope")
    assert all(name in str(err.value) for name in PRESETS)


def test_same_seed_same_workload_other_seed_differs() -> None:
    a, b, c = (generate("edge-mix", 4.0, 60.0, seed=s) for s in (7, 7, 8))
    assert a.specs == b.specs
    assert a.specs != c.specs


def test_rates_share_classes_and_lengths() -> None:
    """Common random numbers across a sweep: request i keeps its class and lengths; its time scales."""
    slow, fast = generate("edge-mix", 2.0, 100.0, seed=3), generate("edge-mix", 4.0, 100.0, seed=3)
    for s, f in zip(slow.specs, fast.specs):
        assert (s.slo_class, s.prompt_len, s.output_len) == (f.slo_class, f.prompt_len, f.output_len)
        assert f.arrival_s == pytest.approx(s.arrival_s / 2)


def test_slo_overrides_for_one_class_or_all() -> None:
    mix = with_slo_overrides(get_preset("edge-mix"), ["realtime=tpot<=40ms", "e2e<=30s"])
    slos = {m.name: m.slo_class.slo for m in mix}
    assert slos["realtime"] == SLO(0.5, 0.04, 30.0)
    assert slos["nrt-100"] == SLO(1.0, 0.1, 30.0)
    with pytest.raises(ValueError, match="positive"):
        with_slo_overrides(mix, ["tpot<=0ms"])
    with pytest.raises(ValueError, match="unknown SLO class"):
        with_slo_overrides(mix, ["gold=tpot<=1s"])
    # The one grammar: spaces, `;`/`and` separators; class targets have no place in a workload's request bounds.
    assert with_slo_overrides(mix, ["realtime = ttft <= 2s and tpot < 30ms"])[0].slo_class.slo == SLO(2.0, 0.03, 30.0)
    with pytest.raises(ValueError, match="scope 'request'"):
        with_slo_overrides(mix, ["realtime=p99 tpot<=1s"])


def test_mix_weights_parsing() -> None:
    assert parse_mix_weights("a=1, b=3", ["a", "b"]) == {"a": 1.0, "b": 3.0}
    for bad in ("a", "c=1", "a=x", "a=-1", "a=0", "a=1,a=2"):
        with pytest.raises(ValueError):
            parse_mix_weights(bad, ["a", "b"])


def test_to_requests_builds_fresh_simulator_requests() -> None:
    w = generate("edge-mix", 4.0, 20.0, seed=1)
    reqs = to_requests(w.specs, w.classes)
    again = to_requests(w.specs, w.classes)
    assert len(reqs) == len(w.specs) and reqs[0] is not again[0]
    for spec, req in zip(w.specs, reqs):
        assert req.num_prompt_tokens == spec.prompt_len and req.max_tokens == spec.output_len
        assert req.sampling_params.ignore_eos and req.arrival_s == spec.arrival_s
        assert req.slo == w.classes[spec.slo_class].slo and req.utility == w.classes[spec.slo_class].utility
    assert len({r.req_id for r in reqs}) == len(reqs)
    with pytest.raises(ValueError, match="unknown SLO class"):
        to_requests(w.specs, {})
