"""SLO-aware routing vs Ray Serve's default routing: two engine replicas, the same arrivals, per-class attainment.

Starts a local Ray cluster once; for each routing ("slo": SLORequestRouter, "default": Serve's
power-of-two-choices) deploys the app with N replicas, replays the same seeded workload over HTTP with
`sliceserve bench --url`'s client (open loop, streaming, SLO bounds in each body), prints attainment per
class side by side, and tears the app down. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/ray_routing.py                       # embedded SmolLM2-135M, edge-mix
    .venv/bin/python benchmarks/ray_routing.py --request-rate 2 --duration 60 --output results.json

Timings on a shared 2-core box vary up to 2x between runs (docs/DESIGN.md): compare within one run.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bench_args(url: str, args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(url=url, goodput=None, slo_scale=args.slo_scale, ttft_scale=None,
                              profile=args.latency_profile, workload=args.workload, slo=[],
                              request_rate=args.request_rate, duration=args.duration, seed=args.seed,
                              burstiness=args.burstiness, max_requests=None, max_time=None, no_progress=True,
                              no_requests=True)


def _engine_config(args: argparse.Namespace) -> dict:
    config = {"policy": args.policy, "max_num_seqs": args.max_num_seqs, "num_threads": 1, "log_level": "warning",
              "max_waiting": 256}
    if args.model:
        config["model"] = args.model
    if args.latency_profile:
        config["latency_profile"] = args.latency_profile
    if args.max_model_len:
        config["max_model_len"] = args.max_model_len
    return config


def run_one(routing: str, args: argparse.Namespace) -> dict:
    from ray import serve

    from sliceserve.bench.http import run_http
    from sliceserve.integrations.ray.config import split_settings
    from sliceserve.integrations.ray.launch import APP_NAME, start

    port = _free_port()
    ray_settings, engine_settings = split_settings({**_engine_config(args), "ray": {
        "replicas": args.replicas, "routing": routing, "http_port": port,
        "num_cpus_per_replica": args.num_cpus_per_replica}})
    t0 = time.monotonic()
    url = start(engine_settings, ray_settings, num_cpus=args.num_cpus)
    print(f"[{routing}] {args.replicas} replicas up in {time.monotonic() - t0:.0f} s at {url}", file=sys.stderr)
    try:
        out = run_http(_bench_args(url, args))
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()   # the proxy holds the port; the next routing gets a fresh one
    return out


def _row(res: dict, cls: str) -> dict:
    return res["results"][next(iter(res["results"]))]["per_class"].get(cls, {})


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: dict[str, dict]) -> None:
    any_res = next(iter(results.values()))
    classes = list(any_res["results"][next(iter(any_res["results"]))]["per_class"])
    routings = list(results)
    head = ["class", "n"] + [f"attain[{r}]" for r in routings] + [f"p90 ttft s[{r}]" for r in routings] \
        + [f"mean tpot ms[{r}]" for r in routings]
    rows = []
    for cls in classes + ["(all)"]:
        cells = []
        for key, spec, scale in (("slo_attainment", ".3f", 1.0), ("p90_ttft_s", ".2f", 1.0),
                                 ("mean_tpot_s", ".0f", 1e3)):
            for r in routings:
                res = results[r]
                row = (res["results"][next(iter(res["results"]))]["summary"] if cls == "(all)"
                       else _row(res, cls))
                v = row.get(key)
                cells.append(_fmt(None if v is None else v * scale, spec))
        n = (_row(results[routings[0]], cls).get("num_requests") if cls != "(all)"
             else results[routings[0]]["results"][next(iter(results[routings[0]]["results"]))]["summary"]
             .get("num_requests"))
        rows.append([cls, str(n)] + cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF dir or GGUF (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--latency-profile", default=None, help="skip the start-up calibration of each replica")
    p.add_argument("--policy", default="slice")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--workload", default="edge-mix")
    p.add_argument("--request-rate", type=float, default=1.5, help="total arrivals per second (all replicas)")
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--burstiness", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo-scale", type=float, default=None, help="SLO scale of the workload (or give --latency-profile: "
                   "its l(1) and p(256) set it; never the replicas' own estimates)")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs the local Ray cluster may use")
    p.add_argument("--num-cpus-per-replica", type=float, default=0.5)
    p.add_argument("--routing", default="slo,default",
                   help="comma-separated runs in order, each slo or default; repeat to see run-to-run noise")
    p.add_argument("--output", default=None, help="write both results as JSON here")
    args = p.parse_args()

    import ray

    from sliceserve.integrations.ray import require_ray

    require_ray()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    results: dict[str, dict] = {}
    try:
        for i, routing in enumerate(r.strip() for r in args.routing.split(",")):
            key = routing if routing not in results else f"{routing}{i + 1}"   # repeats: slo,default,slo,default
            results[key] = run_one(routing, args)
    finally:
        ray.shutdown()
    cfg = next(iter(results.values()))["config"]
    print(f"\n{cfg['workload'].get('preset', args.workload) if isinstance(cfg['workload'], dict) else args.workload}"
          f" at {args.request_rate} req/s total for {args.duration:g} s, seed {args.seed}, {args.replicas} replicas "
          f"({args.policy}), SLO scale {cfg['slo_scale']:.3g}, server l(1) "
          f"{(cfg['server'].get('decode_l1_s') or 0) * 1e3:.1f} ms")
    print_table(results)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
