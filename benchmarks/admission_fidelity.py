"""Admission's TTFT prediction and its refusals, offline: the server's admission hook on the simulator.

The simulator's device is the latency model itself (no noise unless asked), so any gap between the TTFT that
admission predicted and the TTFT the request then got is the estimate's own error, not the model's. The set-up
is the live benchmark's (benchmarks/live_fidelity.py) with the device simulated:
- the CPU profile the live server measures (`cpu-epyc-int8`: the embedded model, int8, one thread), the SLO
  scale derived from it (`bench.device_scale`), and 1x = the live benchmark's sustainable edge-mix rate;
- the server's defaults: SLICE, 16 sequences, 512 batched tokens, 64 waiting, the feedback controller wired
  as the server wires it (`attach_control`), the server's admission hook (`make_admit`), its waiting-queue
  rules (`engine/door.py`: displacement from a full queue, `max_queue_time_s` 60 s) and, with
  `--overload reject`, SLICE's refusals of lost work (`lost_work_config`: `slice_reject_lost`, `slice_drop_lost`);
- every load and seed run twice on the same arrivals, `reject` and `best_effort`: a request refused in the
  first that met its SLO in the second is a false refusal. `best_effort` parks what `reject` refuses
  (`Scheduler.park`), so until parked work first runs on time nobody else needs, the two schedules are the
  same (tests/engine/test_best_effort_parking.py): a false refusal is one that spare time alone would have met.
Printed per load (all seeds pooled): predicted / simulated TTFT of admitted requests (median, p10, p90),
refusals by who refused (the live benchmark's `refusal_kind`: admission's 429 at the door, the policy once the
TTFT passed or once it counts the SLO lost, the controller's shedding), false refusals (met in the best_effort
replay, the issue's definition), those met in the last replay (run on its own `--jitter` noise, 2 % by default:
with `--noise` and `--jitter` at the live device's level it parts from the `reject` run as a live replay does),
those met in every one of `--replays` best_effort replays, and the replays' own disagreement: of the requests
that missed in the first replay, the share that met in the second. That share is the floor of the first count: a refusal of exactly the requests
that miss in one replay would score it against another. Then attainment and real-time attainment.

    nice -n 19 python benchmarks/admission_fidelity.py --seeds 1,2,3 --duration-s 300 [--policy P] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from sliceserve.bench.device_scale import latency_scale
from sliceserve.cli.simulate_cmd import parse_setting
from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.core.policies import available_policies, make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.metrics import request_metrics
from sliceserve.request import FinishReason, Request
from sliceserve.server.admission import lost_work_config, make_admit
from sliceserve.server.control import attach_control
from sliceserve.server.settings import ServerSettings
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.workload import generate, get_preset
from sliceserve.workload.spec import to_requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
# 1x, who refused and the replays' own disagreement: as the live benchmark reads them
from live_fidelity import refusal_kind, replay_flips, sustainable_rate  # noqa: E402

DONE = (FinishReason.STOP, FinishReason.LENGTH)


def run_once(profile: LatencyModel, rate: float, duration_s: float, seed: int, overload: str,
             noise: float, controller: bool, noise_seed: int | None = None,
             settings: dict | None = None, policy: str | None = None) -> list[Request]:
    """One simulated server run of edge-mix at `rate`; every arrival, ended one way or another. `settings`:
    scheduler fields set on top of the server's (`--set`), in both the reject run and its replays; `policy`:
    another policy than the server's default (`sliceserve serve --policy`)."""
    server = ServerSettings() if policy is None else ServerSettings(policy=policy)
    scale = latency_scale(profile)
    wl = generate("edge-mix", rate, duration_s, seed, mix=get_preset("edge-mix", scale.slo, scale.ttft))
    reqs = to_requests(wl.specs, wl.classes)
    # Prefix caching off: the simulator's prompts are all one dummy token, which would share every block.
    config = SchedulerConfig(policy=server.policy).with_overrides(
        max_num_seqs=server.max_num_seqs, max_num_batched_tokens=server.max_num_batched_tokens,
        enable_prefix_caching=False, **lost_work_config(overload)).with_overrides(**(settings or {}))   # --set wins
    sched = make_scheduler(server.policy, config, profile.copy())
    sim = Simulator(EngineCore(sched, SimulatedExecutor(profile.copy(), noise=noise, seed=seed if noise_seed is None else noise_seed)),
                    max_time_s=duration_s * 4, max_queue_time_s=server.max_queue_time_s)
    sim.admit = make_admit(server.max_waiting, overload)
    if controller:
        state = SimpleNamespace(engine=sim, metrics=SimpleNamespace(registry=CollectorRegistry()))
        attach_control(FastAPI(), state, server.controller.to_config())
    sim.add_arrivals(reqs)
    return sim.run().requests


def summarize(load: float, runs: list[tuple[list[Request], list[list[Request]]]]) -> dict:
    """`runs`: per seed, the reject run and its best_effort replays (the first as given, the others with
    `--jitter` iteration noise, each on its own noise seed)."""
    ratios, refusals, false, robust, diverged, kinds, false_kinds, diverged_kinds = [], 0, 0, 0, 0, {}, {}, {}
    met, rt, missed_b, flipped = [], [], 0, 0
    for rejected_run, replays in runs:
        met_b = [{r.req_id: request_metrics(r).met for r in replay} for replay in replays]
        for r in rejected_run:
            m = request_metrics(r)
            met.append(m.met)
            if r.slo_class == "realtime":
                rt.append(m.met)
            if r.finish_reason in DONE and r.predicted_ttft_s and m.ttft_s:
                ratios.append(r.predicted_ttft_s / m.ttft_s)
            if r.finish_reason is FinishReason.REJECTED:
                refusals += 1
                kind = refusal_kind(r.error or "")
                kinds[kind] = kinds.get(kind, 0) + 1
                false += met_b[0][r.req_id]
                robust += all(mb[r.req_id] for mb in met_b)
                diverged += met_b[-1][r.req_id]
                diverged_kinds[kind] = diverged_kinds.get(kind, 0) + met_b[-1][r.req_id]
                false_kinds[kind] = false_kinds.get(kind, 0) + met_b[0][r.req_id]
        if len(met_b) > 1:   # the replays' own disagreement: missed in the first, met in the second
            missed, met_again = replay_flips(met_b[0], met_b[1])
            missed_b, flipped = missed_b + missed, flipped + met_again
    q = np.quantile(ratios, [0.1, 0.5, 0.9]) if ratios else [float("nan")] * 3
    return {"load": load, "n": len(met), "ratio": q, "n_ratios": len(ratios), "refusals": refusals,
            "kinds": kinds, "false_kinds": false_kinds, "diverged_kinds": diverged_kinds, "false": false,
            "robust": robust, "diverged": diverged,   # diverged: met in the last replay, run on its own noise
            "attainment": statistics.mean(met),
            "realtime": statistics.mean(rt) if rt else float("nan"), "floor": flipped / missed_b if missed_b else None,
            "attainment_b": statistics.mean(request_metrics(r).met for _, b in runs for r in b[0])}


def _share(n: int, d: int) -> str:
    return f"{n} ({n / d:.1%})" if d else f"{n} (-)"


def row(s: dict) -> str:
    p10, p50, p90 = s["ratio"]
    # who refused: how many, and how many of those met their SLO in the (first) best_effort replay
    kinds = ", ".join(f"{k} {v} ({s['false_kinds'].get(k, 0)} false; {s['diverged_kinds'].get(k, 0)} in the last)"
                      for k, v in sorted(s["kinds"].items())) or "-"
    floor = f"{s['floor']:.1%}" if s["floor"] is not None else "-"
    return (f"| {s['load']:g}x | {s['n']} | {p50:.2f} | {p10:.2f} / {p90:.2f} | {s['n_ratios']} | {s['refusals']} "
            f"({kinds}) | {_share(s['false'], s['refusals'])} | {_share(s['diverged'], s['refusals'])} | "
            f"{_share(s['robust'], s['refusals'])} | {floor} | "
            f"{s['attainment']:.3f} | {s['attainment_b']:.3f} | {s['realtime']:.3f} |")


HEAD = ("| load | requests | pred/sim TTFT median | p10 / p90 | admitted | refusals (who: n (false)) | false refusals "
        "(met in the replay) | met in the last replay (its own noise) | met in every replay | replays' own flips | "
        "attainment (reject) | attainment (best effort) | realtime (reject) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
# Iteration noise of the extra best_effort replays: how much a replay's verdicts move when nothing but the
# timing of iterations changes by ~2%.
JITTER = 0.02


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu-epyc-int8", help="latency profile: the device (default cpu-epyc-int8)")
    ap.add_argument("--loads", default="0.5,1,2", help="multiples of the sustainable rate (default 0.5,1,2)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--duration-s", type=float, default=300.0, help="seconds of arrivals per run (default 300)")
    ap.add_argument("--noise", type=float, default=0.0, help="lognormal sigma on each iteration's time (default 0)")
    ap.add_argument("--no-controller", action="store_true", help="leave the feedback controller out")
    ap.add_argument("--policy", default=None, choices=available_policies(),
                    help="serve with this policy instead of the server's default (as `sliceserve serve --policy`)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a SchedulerConfig field on top of the server's defaults, as `simulate --set`; repeatable")
    ap.add_argument("--replays", type=int, default=3,
                    help="best_effort replays per run: the first with --noise, the others with --jitter (default 3)")
    ap.add_argument("--jitter", type=float, default=JITTER,
                    help=f"lognormal sigma of the replays after the first, each with its own noise seed (default {JITTER:g}); "
                         "with --noise at the live device's level, the last replay diverges from the reject run as a "
                         "live replay does")
    args = ap.parse_args()
    logging.getLogger("sliceserve.control").setLevel(logging.ERROR)   # the controller's at-risk warnings
    profile = load_profile(args.profile)
    settings = dict(parse_setting(s) for s in args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    rate1 = sustainable_rate(profile, seeds[0])
    print(f"profile {profile.name}: p(256) {profile.prefill_time(256) * 1e3:.0f} ms, l(1) "
          f"{profile.decode_time(1) * 1e3:.1f} ms; 1x = {rate1:.3f} req/s of edge-mix; {latency_scale(profile)}; "
          f"seeds {seeds}, {args.duration_s:g} s each, noise {args.noise:g}; "
          f"policy {args.policy or ServerSettings().policy}; settings {settings or 'the server defaults'}", flush=True)
    print(HEAD, flush=True)
    for load in (float(x) for x in args.loads.split(",")):
        ctl = not args.no_controller
        runs = [(run_once(profile, load * rate1, args.duration_s, seed, "reject", args.noise, ctl,
                          settings=settings, policy=args.policy),
                 [run_once(profile, load * rate1, args.duration_s, seed, "best_effort",
                           args.noise if i == 0 else args.jitter, ctl, noise_seed=seed + 1000 * i, settings=settings,
                           policy=args.policy)
                  for i in range(args.replays)]) for seed in seeds]
        print(row(summarize(load, runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
