"""`sliceserve bench`: run a workload against the local engine (in-process, wall clock) or a server URL.

The local path lives in sliceserve.bench.local; a server path plugs in as another `_run_<engine>` function
next to `_run_local` and shares the workload, report and output code here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sliceserve.bench.device_scale import SLO_SCALE_RULE


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("local",), default="local",
                        help="local: the real model in this process, on the wall clock (default)")
    parser.add_argument("--policy", default="slice",
                        help="comma-separated policies, run one after another on identical arrivals")
    parser.add_argument("--workload", default="edge-mix", help="workload preset (default: edge-mix)")
    parser.add_argument("--request-rate", type=float, required=True, help="mean arrivals per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    parser.add_argument("--burstiness", type=float, default=1.0,
                        help="gamma shape of inter-arrival times; 1 = Poisson (vLLM bench's meaning)")
    parser.add_argument("--max-requests", type=int, default=None, help="cap on the number of arrivals")
    parser.add_argument("--seed", type=int, default=0, help="seeds arrivals, classes, lengths and prompt tokens")
    parser.add_argument("--slo-scale", type=float, default=None,
                        help=f"multiply every SLO bound of the workload by this; default: derived, {SLO_SCALE_RULE}")
    parser.add_argument("--ttft-scale", type=float, default=None,
                        help="multiply the workload's TTFT bounds by this instead (default: --slo-scale if given, "
                             "else derived as above)")
    parser.add_argument("--profile", default=None,
                        help="latency profile JSON from `sliceserve profile` (or a built-in name) for the scheduler "
                             "and the SLO scale; default: a quick measurement at start-up")
    parser.add_argument("--output", default=None, help="write the results JSON here")
    parser.add_argument("--no-requests", action="store_true", help="leave per-request records out of the JSON")
    parser.add_argument("--max-time", type=float, default=None,
                        help="wall seconds per policy after which unfinished requests are aborted and count as "
                             "missed (default: 4 x duration + 30)")
    parser.add_argument("--slo", action="append", default=[], metavar="[CLASS=]EXPR",
                        help="override per-request SLO bounds after the scaling (SLO text, request scope), "
                             "e.g. realtime=tpot<=400ms; repeatable")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="scheduler batch limit (sequences)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="scheduler token budget per step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any SchedulerConfig field; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument("--constrained-fraction", type=float, default=0.0,
                        help="local engine: share of requests decoded under a grammar (JSON records), 0-1")
    http = parser.add_argument_group("server (sliceserve.bench.http)")
    http.add_argument("--url", default=None,
                      help="replay against a running server (e.g. http://127.0.0.1:8000) instead of --engine")
    http.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                      help="vLLM bench goodput bounds, e.g. ttft:500 tpot:50 e2el:5000 (with --url)")
    local = parser.add_argument_group("local engine")
    local.add_argument("--model", default=None,
                       help="local Hugging Face directory or GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    local.add_argument("--backend", choices=("torch", "llamacpp"), default="torch",
                         help="executor: torch (default) or llamacpp (a GGUF file on llama.cpp; pip install 'sliceserve[llamacpp]')")
    local.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    local.add_argument("--dtype", default=None, help="auto (default: int8 on CPU, bf16 or fp16 on CUDA) | int8 | float32 (the exact reference) | bfloat16 | float16")
    local.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                       help="run every decode step eagerly on CUDA instead of replaying CUDA graphs captured at start-up")
    local.add_argument("--num-threads", "--threads", dest="threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    local.add_argument("--kv-cache-memory", type=int, default=None,
                       help="bytes of KV cache (default: sized by the loader from free memory)")
    local.add_argument("--max-model-len", type=int, default=None, help="longest sequence (default: the model's)")


def _scheduler_overrides(args: argparse.Namespace) -> dict:
    from sliceserve.cli.simulate_cmd import parse_setting  # the same KEY=VALUE reading as `simulate --set`

    names = ("max_num_seqs", "max_num_batched_tokens")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    overrides.update(parse_setting(s) for s in args.set)
    reserved = sorted(set(overrides) & {"num_kv_blocks", "block_size", "max_model_len", "policy"})
    if reserved:
        raise ValueError(f"--set {', '.join(reserved)}: the local engine takes these from the model and --policy")
    return overrides


def _check(args: argparse.Namespace) -> None:
    if not args.request_rate > 0:
        raise ValueError(f"--request-rate must be positive, got {args.request_rate}")
    if not args.duration > 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    if args.max_time is not None and not args.max_time > 0:
        raise ValueError(f"--max-time must be positive, got {args.max_time}")


def _run_local(args: argparse.Namespace, policies: list[str]) -> dict:
    from sliceserve.bench.local import LocalSettings, describe, resolve, run_local, synthetic_requests
    from sliceserve.bench.progress import progress
    from sliceserve.engine.backend import load_backend
    from sliceserve.workload import generate, get_preset, with_slo_overrides

    scheduler = _scheduler_overrides(args)
    loaded = load_backend(args.backend, args.model, device=args.device, dtype=args.dtype, num_threads=args.threads,
                          kv_cache_memory_bytes=args.kv_cache_memory, max_model_len=args.max_model_len,
                          max_num_seqs=scheduler.get("max_num_seqs"), cuda_graphs=args.cuda_graphs)
    latency, scale = resolve(loaded, args.profile, args.slo_scale, args.ttft_scale)
    mix = with_slo_overrides(get_preset(args.workload, scale.slo, scale.ttft), args.slo)
    workload = generate(args.workload, args.request_rate, args.duration, args.seed, args.burstiness,
                        max_requests=args.max_requests, mix=mix)
    if not workload.specs:
        raise ValueError("the workload has no requests; raise --request-rate or --duration")
    settings = LocalSettings(
        scheduler=scheduler, seed=args.seed, include_requests=not args.no_requests,
        progress=not args.no_progress, constrained_fraction=args.constrained_fraction,
        max_time_s=args.max_time if args.max_time is not None else 4 * args.duration + 30)
    _, capped = synthetic_requests(workload, "check", 2, loaded.max_model_len, args.seed)
    print(f"{len(workload.specs)} requests of {args.workload}, {scale}, l(1) = {latency.decode_time(1) * 1e3:.1f} ms",
          file=sys.stderr)
    with progress(len(policies), "policies", "done", enabled=not args.no_progress) as bar:
        results = run_local(loaded, policies, workload, latency, settings, on_done=lambda _p: bar.update(1))
    config = {"workload": workload.describe(), "request_rate": args.request_rate, "duration_s": args.duration,
              "burstiness": args.burstiness, "seed": args.seed, "policies": policies,
              "constrained_fraction": args.constrained_fraction,
              **describe(loaded, latency, args.profile, scale, settings, capped)}
    return {"config": config, "results": results}


# engine name -> runner returning {"config": ..., "results": {POLICY: {...}}}
_ENGINES = {"local": _run_local}


def run(args: argparse.Namespace) -> int:
    from sliceserve.bench.report import summary_table
    from sliceserve.core.policies import parse_policy_list

    _check(args)
    if args.url:   # the server's own policy runs; --policy does not apply
        from sliceserve.bench.http import run_http

        out = run_http(args)
    else:
        policies = parse_policy_list(args.policy)
        out = _ENGINES[args.engine](args, policies)
    print(summary_table(out["results"]))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
