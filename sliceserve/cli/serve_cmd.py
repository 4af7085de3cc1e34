"""`sliceserve serve`: the OpenAI-compatible server. Settings: CLI > SLICESERVE_* env > --config file > defaults."""
from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    # Every default is None: only flags actually given override the environment and the file.
    add = parser.add_argument
    add("--model", help="HF directory or GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    add("--served-model-name", help="model id reported by /v1/models")
    add("--policy", help="scheduling policy (default: slice)")
    add("--backend", choices=("torch", "llamacpp"),
        help="executor: torch (default) or llamacpp (a GGUF file on llama.cpp; pip install 'sliceserve[llamacpp]')")
    add("--host", help="bind address (default: 127.0.0.1)")
    add("--port", type=int, help="port (default: 8000)")
    add("--config", metavar="FILE.yaml", help="YAML file of settings (keys as in docs/SERVER.md)")
    add("--device", help="cpu or cuda (default: cpu)")
    add("--dtype", help="auto (default: int8 on CPU, bf16 or fp16 on CUDA) | int8 | float32 (the exact reference) | bfloat16 | float16")
    add("--no-cuda-graphs", dest="cuda_graphs", action="store_const", const=False, default=None,
        help="run every decode step eagerly on CUDA instead of replaying CUDA graphs captured at start-up")
    add("--max-model-len", type=int)
    add("--max-num-seqs", type=int)
    add("--max-num-batched-tokens", type=int)
    add("--max-waiting", type=int, help="bounded waiting queue; arrivals beyond it get 503 (default: 64)")
    add("--max-queue-time", dest="max_queue_time_s", type=float, metavar="S",
        help="a request without a first token after S seconds, or after its TTFT bound if longer, gets 503 "
             "(default: 60)")
    add("--overload", choices=("reject", "best_effort"),
        help="a request whose SLO can't be met under current load: 429 (reject) or serve it (best_effort)")
    add("--latency-profile", help="latency profile JSON from `sliceserve profile` (default: measure at start)")
    add("--default-slo-class", help="SLO class of requests that name none")
    add("--slo-scale", type=float, help="multiply every SLO class bound (default: 1)")
    add("--ttft-scale", type=float, help="multiply the classes' TTFT bounds by this instead (default: --slo-scale)")
    add("--kv-cache-memory-bytes", type=int)
    add("--num-threads", type=int, help="torch threads (default: 1)")
    add("--log-level", choices=("debug", "info", "warning", "error"))
    add("--ray", action="store_true", help="scale out on Ray Serve: N engine replicas behind an SLO-aware router "
        "(needs `pip install sliceserve[ray]`; docs/SCALE_OUT.md)")
    add("--replicas", type=int, help="with --ray: number of engine replicas (default: 2)")
    add("--ray-address", help="with --ray: join this Ray cluster (default: RAY_ADDRESS, else start a local one)")
    add("--memory-limit", metavar="SIZE",
        help="keep the process under SIZE (e.g. 700MB, 1GiB): bounds the KV cache, and on CPU loads the weights "
             "as int8 when fp32 would not fit")
    add("--server-slo", metavar="EXPR", help="SLO text, server scope (resource targets), e.g. 'memory <= 2GB, power <= 15W'")
    add("--class-slo", action="append", metavar="CLASS=EXPR",
        help="SLO text of a class (class scope), e.g. 'realtime=p99 ttft <= 500ms, tpot <= 80ms' (repeatable; "
             "creates the class if it does not exist)")
    add("--no-controller", dest="controller_enabled", action="store_const", const=False, default=None,
        help="switch the SLO feedback controller off")
    add("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health and /ready "
        "(default: SLICESERVE_API_KEY, else none)")
    add("--public-monitoring", dest="public_monitoring", action="store_const", const=True, default=None,
        help="serve /metrics and /v1/status without the API key")
    add("--allowed-origins", metavar="ORIGINS", help="comma-separated origins allowed by CORS (default: none)")
    add("--allowed-hosts", metavar="HOSTS",
        help="comma-separated Host header values accepted (default: the bind address's names; '*' for any)")
    add("--max-body-bytes", type=int, help="request bodies larger than this get 413 (default: 2 MiB)")
    add("--shutdown-timeout", dest="shutdown_timeout_s", type=float, metavar="S",
        help="on SIGTERM, let in-flight requests finish for up to S seconds (default: 30)")
    add("--no-prefix-caching", dest="enable_prefix_caching", action="store_const", const=False, default=None,
        help="do not share KV blocks of repeated prompt prefixes")
    add("--no-idle-reprofile", dest="idle_reprofile", action="store_const", const=False, default=None,
        help="never re-measure a drifted latency term in idle gaps (the online calibration still runs)")


_FIELDS = ("model", "served_model_name", "policy", "backend", "host", "port", "device", "dtype", "cuda_graphs",
           "max_model_len",
           "max_num_seqs", "max_num_batched_tokens", "max_waiting", "max_queue_time_s", "overload", "latency_profile",
           "default_slo_class", "slo_scale", "ttft_scale", "kv_cache_memory_bytes", "num_threads", "log_level", "memory_limit",
           "server_slo", "class_slo", "controller_enabled", "enable_prefix_caching", "api_key", "public_monitoring",
           "allowed_origins", "allowed_hosts", "max_body_bytes", "shutdown_timeout_s", "idle_reprofile")


def run(args: argparse.Namespace) -> int:
    if args.ray:
        from sliceserve.integrations.ray.launch import run_from_cli

        return run_from_cli({name: getattr(args, name) for name in _FIELDS}, args.config, args.replicas,
                            args.ray_address)
    if args.replicas is not None or args.ray_address is not None:
        raise ValueError("--replicas and --ray-address need --ray")
    from sliceserve.server.run import serve
    from sliceserve.server.settings import load_settings

    settings = load_settings({name: getattr(args, name) for name in _FIELDS}, config_file=args.config)
    serve(settings)
    return 0
