"""Named workload presets and the generator that turns one into timed request specs.

`edge-mix` is modelled on the SLICE paper (arXiv 2510.18544): a real-time class with a 50 ms TPOT SLO and
utility 100, and non-real-time classes with TPOT SLOs of 100, 120 and 250 ms and utility 1. The paper gives
TPOT bounds and utilities; the TTFT bounds, shares and lengths below are this project's choices.

`slo_scale` multiplies every time bound (TTFT, TPOT, E2E) of every class, `ttft_scale` (if given) the TTFT
bounds instead: use F > 1 for a device slower than the one the preset was written for (the RTX 4060 Ti of
`paper-4060ti`), F < 1 for a faster one (sliceserve.bench.device_scale derives both from a latency model).
"""
from __future__ import annotations

import re

import numpy as np

from sliceserve.slo import SLO, SLOClass, parse_slo
from sliceserve.workload.arrivals import arrival_times
from sliceserve.workload.lengths import parse_length_dist
from sliceserve.workload.spec import ClassMix, RequestSpec, Workload


def _mix(name: str, weight: float, ttft_s: float | None, tpot_s: float | None, e2e_s: float | None,
         utility: float, prompt: str, output: str) -> ClassMix:
    return ClassMix(SLOClass(name, SLO(ttft_s, tpot_s, e2e_s), utility), weight,
                    parse_length_dist(prompt), parse_length_dist(output))


# "realtime=tpot<=40ms": a class name, then "=" that is not part of "<=".
_CLASS_PREFIX = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=(?!=)(.*)$")

_NRT_PROMPT, _NRT_OUTPUT = "lognormal:256:0.5:1024", "lognormal:96:0.5:384"

PRESETS: dict[str, tuple[ClassMix, ...]] = {
    "edge-mix": (
        _mix("realtime", 0.2, 0.5, 0.050, None, 100.0, "uniform:32:256", "uniform:16:64"),
        _mix("nrt-100", 0.3, 1.0, 0.100, None, 1.0, _NRT_PROMPT, _NRT_OUTPUT),
        _mix("nrt-120", 0.3, 2.0, 0.120, None, 1.0, _NRT_PROMPT, _NRT_OUTPUT),
        _mix("nrt-250", 0.2, 5.0, 0.250, None, 1.0, "lognormal:512:0.5:2048", "lognormal:192:0.5:512"),
    ),
    # A chat service: one interactive class, ShareGPT-like long-tailed lengths.
    "chat": (_mix("interactive", 1.0, 1.0, 0.100, None, 1.0, "lognormal:512:0.7:2048", "lognormal:128:0.7:512"),),
    # Offline jobs: only a completion deadline matters.
    "batch": (_mix("batch", 1.0, None, None, 60.0, 1.0, "lognormal:1024:0.5:3072", "fixed:256"),),
    # Small fixed lengths, for tests and smoke runs.
    "uniform-test": (_mix("test", 1.0, 1.0, 0.100, None, 1.0, "fixed:64", "fixed:32"),),
}


def get_preset(name: str, slo_scale: float = 1.0, ttft_scale: float | None = None) -> tuple[ClassMix, ...]:
    """The class mix of preset `name` with every time bound multiplied by `slo_scale` (TTFT bounds by
    `ttft_scale` when given)."""
    if name not in PRESETS:
        raise ValueError(f"unknown workload preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return tuple(
        ClassMix(SLOClass(m.name, m.slo_class.slo.scaled(slo_scale, ttft_scale), m.slo_class.utility), m.weight, m.prompt, m.output)
        for m in PRESETS[name]
    )


def parse_mix_weights(text: str, known: list[str]) -> dict[str, float]:
    """'realtime=0.2,nrt-100=0.8' -> weights; every name must be one of `known`."""
    weights: dict[str, float] = {}
    for term in (t.strip() for t in text.split(",")):
        name, sep, value = term.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"cannot read class weight {term!r}; write CLASS=WEIGHT, e.g. realtime=0.2")
        if name not in known:
            raise ValueError(f"unknown SLO class {name!r} in mix; known: {', '.join(known)}")
        if name in weights:
            raise ValueError(f"SLO class {name!r} given twice in mix {text!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"weight of class {name!r} must be a number, got {value!r}") from None
        if not (np.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight of class {name!r} must be >= 0, got {weight!r}")
        weights[name] = weight
    if not sum(weights.values()) > 0:
        raise ValueError(f"class mix {text!r} gives every class weight 0")
    return weights


def choose_classes(names: list[str], weights: list[float], n: int, rng: np.random.Generator) -> list[str]:
    """`n` class names drawn independently with probability proportional to `weights`."""
    p = np.asarray(weights, dtype=float)
    if p.sum() <= 0:
        raise ValueError("class mix needs at least one positive weight")
    idx = rng.choice(len(names), size=n, p=p / p.sum())
    return [names[i] for i in idx]


def with_slo_overrides(mix: tuple[ClassMix, ...], overrides: list[str]) -> tuple[ClassMix, ...]:
    """Apply `[CLASS=]EXPR` overrides (e.g. `realtime=tpot<=40ms`, or `ttft<=2s` for every class; EXPR in the
    grammar of sliceserve.slo.parse_slo, request scope): the bounds EXPR names replace the class's, the
    others stay."""
    known = [m.name for m in mix]
    out = list(mix)
    for text in overrides:
        m = _CLASS_PREFIX.match(text)
        target, expr = (m.group(1), m.group(2)) if m else (None, text)
        if target is not None and target not in known:
            raise ValueError(f"unknown SLO class {target!r} in --slo {text!r}; known: {', '.join(known)}")
        # The simulator and bench carry per-request bounds only (no controller): request scope.
        slo = parse_slo(expr, scope="request").request_slo()
        out = [ClassMix(SLOClass(c.name, c.slo_class.slo.merged(slo), c.slo_class.utility), c.weight, c.prompt, c.output)
               if target in (None, c.name) else c for c in out]
    return tuple(out)


def generate(preset: str, rate: float, duration_s: float, seed: int, burstiness: float = 1.0,
             slo_scale: float = 1.0, max_requests: int | None = None,
             mix: tuple[ClassMix, ...] | None = None) -> Workload:
    """Arrivals over `duration_s` at `rate` req/s; classes by the preset's shares; lengths per class.
    `mix` replaces the preset's classes (then `preset` only names the workload and `slo_scale` is unused).

    Arrivals, classes and lengths use separate streams spawned from `seed`, so the i-th request's class and
    lengths are the same at every rate of a sweep; only its arrival time changes.
    """
    if mix is None:
        mix = get_preset(preset, slo_scale)
    s_arrival, s_class, s_len = np.random.SeedSequence(seed).spawn(3)
    times = arrival_times(rate, duration_s, np.random.default_rng(s_arrival), burstiness, max_requests)
    n = len(times)
    names = choose_classes([m.name for m in mix], [m.weight for m in mix], n, np.random.default_rng(s_class))
    # Each class draws full-length columns from its own stream, so request i's lengths depend neither on
    # the other requests' classes nor on how many requests the rate produced.
    drawn = {}
    for m, s in zip(mix, s_len.spawn(len(mix))):
        s_prompt, s_output = s.spawn(2)
        drawn[m.name] = (m.prompt.sample(np.random.default_rng(s_prompt), n),
                         m.output.sample(np.random.default_rng(s_output), n))
    specs = tuple(
        RequestSpec(t, int(drawn[c][0][i]), int(drawn[c][1][i]), c) for i, (t, c) in enumerate(zip(times, names))
    )
    return Workload(preset, specs, {m.name: m.slo_class for m in mix}, mix)
