"""`sliceserve simulate`: run policies on the discrete-event simulator and compare their SLO attainment.

Numeric flags are read as text and checked in `run`, so a bad value becomes the dispatcher's one-line
error (exit code 2) instead of argparse's usage dump.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from sliceserve.config import SchedulerConfig


def add_parser(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--policy", default=SchedulerConfig.policy, help="comma list of policies, e.g. slice,orca,fastserve,vllm")
    a("--workload", default="edge-mix", help="workload preset (edge-mix, chat, batch, uniform-test)")
    a("--trace", default=None, help="Azure LLM trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens) to replay; "
      "SLO classes come from --workload's preset")
    a("--trace-mix", default=None, help="class weights for trace requests, e.g. realtime=0.2,nrt-100=0.8 "
      "(default: the preset's shares)")
    a("--request-rate", default=None, help="mean arrivals per second (default 4; a trace is time-scaled to "
      "it, default: the trace's own rate)")
    a("--burstiness", default="1", help="gamma shape of inter-arrival gaps; 1 = Poisson (vllm bench semantics)")
    a("--duration", default=None, help="seconds of arrivals (default 60; a trace: all of it)")
    a("--seed", default="0", help="seeds arrivals, classes, lengths and device noise")
    a("--profile", default="paper-4060ti", help="latency profile: built-in name or JSON file")
    a("--slo-scale", default="1", help="multiply every SLO bound (TTFT, TPOT, E2E); > 1 for a slower device")
    a("--ttft-scale", default=None, help="multiply the TTFT bounds by this instead (default: --slo-scale)")
    a("--slo", action="append", default=[], metavar="[CLASS=]EXPR",
      help="override per-request SLO bounds after --slo-scale (SLO text, request scope), e.g. realtime=tpot<=40ms "
           "or 'ttft <= 2s, e2e <= 30s' (all classes); repeatable")
    a("--noise", default="0", help="sigma of a lognormal factor on each simulated iteration time")
    a("--max-num-seqs", default=None)
    a("--num-kv-blocks", default=None)
    a("--max-num-batched-tokens", default=None)
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="any SchedulerConfig field; repeatable")
    a("--output", default=None, help="write results as JSON here")
    a("--sweep-rate", default=None, metavar="START:STOP:STEP", help="run every policy at each rate")
    a("--plot", default=None, help="sweep only: PNG of attainment vs rate")
    a("--report", default=None, help="sweep only: Markdown table")
    a("--no-requests", action="store_true", help="leave per-request records out of the JSON "
      "(sweeps always leave them out)")
    a("--no-progress", action="store_true", help="no progress bar on stderr")


def _number(flag: str, text: str, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> float:
    try:
        value = int(text) if integer else float(text)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{flag} must be {kind}, got {text!r}") from None
    if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        raise ValueError(f"{flag} must be {'>' if strict else '>='} {minimum:g}, got {text!r}")
    return value


def parse_setting(text: str) -> tuple[str, object]:
    """`KEY=VALUE` of `--set` as (key, value): true/false, none/null, an int, a float, else the text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set needs KEY=VALUE, got {text!r}")
    raw = raw.strip()
    low = raw.lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    if low in ("none", "null"):
        return key.strip(), None
    for convert in (int, float):
        try:
            return key.strip(), convert(raw)
        except ValueError:
            pass
    return key.strip(), raw


def build_config(args: argparse.Namespace) -> SchedulerConfig:
    overrides: dict[str, object] = {}
    for flag, field in (("--max-num-seqs", "max_num_seqs"), ("--num-kv-blocks", "num_kv_blocks"),
                        ("--max-num-batched-tokens", "max_num_batched_tokens")):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = int(_number(flag, value, integer=True))
    overrides.update(parse_setting(s) for s in args.set)
    return SchedulerConfig().with_overrides(**overrides)


def _workload_factory(args: argparse.Namespace, seed: int, duration: float | None, slo_scale: float,
                      ttft_scale: float | None, burstiness: float):
    """rate -> Workload, deterministic for a given seed."""
    from sliceserve.workload import generate, get_preset, load_trace, parse_mix_weights, with_slo_overrides

    mix = with_slo_overrides(get_preset(args.workload, slo_scale, ttft_scale), args.slo)
    if args.trace is None:
        return lambda rate: generate(args.workload, rate, duration or 60.0, seed, burstiness, mix=mix)
    classes = {m.name: m.slo_class for m in mix}
    weights = parse_mix_weights(args.trace_mix, list(classes)) if args.trace_mix else {m.name: m.weight for m in mix}
    return lambda rate: load_trace(args.trace, classes, weights, seed, rate, duration)


def run(args: argparse.Namespace) -> int:
    from sliceserve.bench.compare import SimSettings, run_policies
    from sliceserve.bench.report import focus_class, markdown_report, summary_table, sweep_table
    from sliceserve.bench.sweep import parse_rate_range, run_sweep
    from sliceserve.core.latency import load_profile
    from sliceserve.core.policies import parse_policy_list

    policies = parse_policy_list(args.policy)
    if len(set(policies)) != len(policies):
        raise ValueError(f"--policy names a policy twice: {args.policy!r}")
    seed = int(_number("--seed", args.seed, integer=True, strict=False))
    burstiness = _number("--burstiness", args.burstiness)
    slo_scale = _number("--slo-scale", args.slo_scale)
    ttft_scale = _number("--ttft-scale", args.ttft_scale) if args.ttft_scale is not None else None
    noise = _number("--noise", args.noise, strict=False)
    duration = _number("--duration", args.duration) if args.duration is not None else None
    if args.request_rate is not None:
        rate: float | None = _number("--request-rate", args.request_rate)
    else:
        rate = None if args.trace else 4.0
    rates = parse_rate_range(args.sweep_rate) if args.sweep_rate else None
    if (args.plot or args.report) and rates is None:
        raise ValueError("--plot and --report need --sweep-rate START:STOP:STEP")
    config = build_config(args)
    latency = load_profile(args.profile)  # parsed once per run (and an unknown profile fails early)
    make_workload = _workload_factory(args, seed, duration, slo_scale, ttft_scale, burstiness)
    probe = make_workload(rates[0] if rates else rate)
    # The lowest rate spans the longest time. The limit is generous: an overloaded policy drains, yet a
    # run that stalls still ends (its unfinished requests count as missed).
    last_arrival = probe.specs[-1].arrival_s if probe.specs else 0.0
    max_time = max(duration or 0.0, last_arrival) * 20 + 600
    settings = SimSettings(config, args.profile, noise, seed, max_time,
                           include_requests=rates is None and not args.no_requests, latency=latency)
    classes = sorted(probe.classes)
    focus = focus_class(probe.classes)
    config_out = {
        "policies": policies, "workload": probe.describe(), "trace": args.trace, "trace_mix": args.trace_mix,
        "request_rate": None if rates else rate, "sweep_rate": rates, "burstiness": burstiness,
        "duration_s": duration, "seed": seed, "slo_scale": slo_scale,
        "ttft_scale": ttft_scale if ttft_scale is not None else slo_scale, **settings.describe(),
    }
    if rates is None:
        results = run_policies(policies, probe, settings)
        print(summary_table(results))
        payload: dict = {"config": config_out, "results": results}
    else:
        sweep = run_sweep(policies, rates, make_workload, settings, progress=not args.no_progress)
        print(sweep_table(sweep, policies, focus))
        payload = {"config": config_out, "sweep": sweep}
        if args.report:
            Path(args.report).write_text(markdown_report(sweep, policies, classes, focus))
        if args.plot:
            from sliceserve.bench.plot import plot_sweep

            plot_sweep(sweep, policies, focus, args.plot, title=f"{probe.name}, profile {args.profile}")
    if args.output:
        Path(args.output).write_text(json.dumps(payload, sort_keys=True, indent=1, allow_nan=False) + "\n")
    return 0
