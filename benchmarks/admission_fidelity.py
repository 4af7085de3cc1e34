"""Admission's TTFT prediction and its refusals, offline: the server's admission hook on the simulator.

The simulator's device is the latency model itself (no noise unless asked), so any gap between the TTFT that
admission predicted and the TTFT the request then got is the estimate's own error, not the model's. The set-up
is the live benchmark's (benchmarks/live_fidelity.py) with the device simulated:
- the CPU profile the live server measures (`cpu-epyc-int8`: the embedded model, int8, one thread), the SLO
  scale derived from it (`bench.device_scale`), and 1x = the live benchmark's sustainable edge-mix rate;
- the server's defaults: SLICE, 16 sequences, 512 batched tokens, 64 waiting, the feedback controller wired
  as the server wires it (`attach_control`), the server's admission hook (`make_admit`) and, with
  `--overload reject`, SLICE's refusal of requests whose TTFT passed (`slice_reject_lost`);
- every load and seed run twice on the same arrivals, `reject` and `best_effort`: a request refused in the
  first that met its SLO in the second is a false refusal.
Printed per load (all seeds pooled): predicted / simulated TTFT of admitted requests (median, p10, p90),
refusals (at the door / by the policy), false refusals, attainment and real-time attainment.

    nice -n 19 python benchmarks/admission_fidelity.py --seeds 1,2,3 --duration-s 300
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
from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.metrics import request_metrics
from sliceserve.request import FinishReason, Request
from sliceserve.server.admission import make_admit
from sliceserve.server.control import attach_control
from sliceserve.server.settings import ServerSettings
from sliceserve.sim import SimulatedExecutor, Simulator
from sliceserve.workload import generate, get_preset
from sliceserve.workload.spec import to_requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_fidelity import sustainable_rate  # noqa: E402  (1x as the live benchmark defines it)

DONE = (FinishReason.STOP, FinishReason.LENGTH)


def run_once(profile: LatencyModel, rate: float, duration_s: float, seed: int, overload: str,
             noise: float, controller: bool) -> list[Request]:
    """One simulated server run of edge-mix at `rate`; every arrival, ended one way or another."""
    server = ServerSettings()
    scale = latency_scale(profile)
    wl = generate("edge-mix", rate, duration_s, seed, mix=get_preset("edge-mix", scale.slo, scale.ttft))
    reqs = to_requests(wl.specs, wl.classes)
    # Prefix caching off: the simulator's prompts are all one dummy token, which would share every block.
    config = SchedulerConfig(policy=server.policy).with_overrides(
        max_num_seqs=server.max_num_seqs, max_num_batched_tokens=server.max_num_batched_tokens,
        enable_prefix_caching=False, slice_reject_lost=overload == "reject")
    sched = make_scheduler(server.policy, config, profile.copy())
    sim = Simulator(EngineCore(sched, SimulatedExecutor(profile.copy(), noise=noise, seed=seed)),
                    max_time_s=duration_s * 4)
    sim.admit = make_admit(server.max_waiting, overload)
    if controller:
        state = SimpleNamespace(engine=sim, metrics=SimpleNamespace(registry=CollectorRegistry()))
        attach_control(FastAPI(), state, server.controller.to_config())
    sim.add_arrivals(reqs)
    return sim.run().requests


def refused_by(req: Request) -> str:
    """Who refused: the policy once the TTFT had passed with no token out (SLICE's `slice_reject_lost`; its
    message shares admission's prefix, so it is told first), admission on its TTFT or its TPOT estimate."""
    text = req.error or ""
    if "no first token within" in text:
        return "policy"
    return "door ttft" if "predicted ttft" in text else "door tpot" if "predicted tpot" in text else "other"


def summarize(load: float, runs: list[tuple[list[Request], list[Request]]]) -> dict:
    ratios, refusals, false, kinds = [], 0, 0, {}
    met, rt = [], []
    for rejected_run, best_run in runs:
        met_b = {r.req_id: request_metrics(r).met for r in best_run}
        for r in rejected_run:
            m = request_metrics(r)
            met.append(m.met)
            if r.slo_class == "realtime":
                rt.append(m.met)
            if r.finish_reason in DONE and r.predicted_ttft_s and m.ttft_s:
                ratios.append(r.predicted_ttft_s / m.ttft_s)
            if r.finish_reason is FinishReason.REJECTED:
                refusals += 1
                kind = refused_by(r)
                kinds[kind] = kinds.get(kind, 0) + 1
                false += met_b.get(r.req_id, False)
    q = np.quantile(ratios, [0.1, 0.5, 0.9]) if ratios else [float("nan")] * 3
    return {"load": load, "n": len(met), "ratio": q, "n_ratios": len(ratios), "refusals": refusals,
            "kinds": kinds, "false": false, "attainment": statistics.mean(met), "realtime": statistics.mean(rt),
            "attainment_b": statistics.mean(request_metrics(r).met for _, b in runs for r in b)}


def row(s: dict) -> str:
    p10, p50, p90 = s["ratio"]
    share = f"{s['false'] / s['refusals']:.1%}" if s["refusals"] else "-"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["kinds"].items())) or "-"
    return (f"| {s['load']:g}x | {s['n']} | {p50:.2f} | {p10:.2f} / {p90:.2f} | {s['n_ratios']} | {s['refusals']} "
            f"({kinds}) | {s['false']} ({share}) | {s['attainment']:.3f} | {s['attainment_b']:.3f} | {s['realtime']:.3f} |")


HEAD = ("| load | requests | pred/sim TTFT median | p10 / p90 | admitted | refusals (who) | false refusals | "
        "attainment (reject) | attainment (best effort) | realtime (reject) |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu-epyc-int8", help="latency profile: the device (default cpu-epyc-int8)")
    ap.add_argument("--loads", default="0.5,1,2", help="multiples of the sustainable rate (default 0.5,1,2)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--duration-s", type=float, default=300.0, help="seconds of arrivals per run (default 300)")
    ap.add_argument("--noise", type=float, default=0.0, help="lognormal sigma on each iteration's time (default 0)")
    ap.add_argument("--no-controller", action="store_true", help="leave the feedback controller out")
    args = ap.parse_args()
    logging.getLogger("sliceserve.control").setLevel(logging.ERROR)   # the controller's at-risk warnings
    profile = load_profile(args.profile)
    seeds = [int(s) for s in args.seeds.split(",")]
    rate1 = sustainable_rate(profile, seeds[0])
    print(f"profile {profile.name}: p(256) {profile.prefill_time(256) * 1e3:.0f} ms, l(1) "
          f"{profile.decode_time(1) * 1e3:.1f} ms; 1x = {rate1:.3f} req/s of edge-mix; {latency_scale(profile)}; "
          f"seeds {seeds}, {args.duration_s:g} s each, noise {args.noise:g}", flush=True)
    print(HEAD, flush=True)
    for load in (float(x) for x in args.loads.split(",")):
        runs = [tuple(run_once(profile, load * rate1, args.duration_s, seed, mode, args.noise,
                               not args.no_controller) for mode in ("reject", "best_effort")) for seed in seeds]
        print(row(summarize(load, runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
