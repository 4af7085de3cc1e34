"""`sliceserve profile --output profile.json`: measure this device and fit the latency model."""
from __future__ import annotations

import argparse
import sys


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="where to write the profile JSON")
    parser.add_argument("--model", default=None,
                        help="local Hugging Face directory or GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--backend", choices=("torch", "llamacpp"), default="torch",
                        help="executor: torch (default) or llamacpp (a GGUF file on llama.cpp; pip install 'sliceserve[llamacpp]')")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default=None, help="auto (default: int8 on CPU, bf16 or fp16 on CUDA) | int8 | float32 (the exact reference) | bfloat16 | float16")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="run every decode step eagerly on CUDA instead of replaying CUDA graphs captured at start-up")
    parser.add_argument("--num-threads", "--threads", dest="threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="largest decode batch measured; every size to 16, then 24, 32, 48, ... up to it (default: 32)")
    parser.add_argument("--contexts", type=_int_list, default=(128, 512, 1024),
                        help="decode context lengths in tokens (default: 128,512,1024)")
    parser.add_argument("--chunks", type=_int_list, default=(32, 64, 128, 256, 512),
                        help="prefill chunk sizes in tokens (default: 32,64,128,256,512)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point; the median is kept (default: 5)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: batch sizes up to 4, the smallest context, two chunk sizes")
    parser.add_argument("--kv-cache-memory", type=int, default=None,
                        help="bytes of KV cache (default: sized by the loader from free memory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompt tokens")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sliceserve.engine.backend import load_backend
    from sliceserve.model.profiler import default_grid, profile_loaded

    grid = default_grid(args.max_batch, args.contexts, args.chunks, quick=args.quick)
    if not args.quick:
        grid = replace(grid, repeats=args.repeats)
    loaded = load_backend(args.backend, args.model, device=args.device, dtype=args.dtype, num_threads=args.threads,
                          kv_cache_memory_bytes=args.kv_cache_memory, cuda_graphs=args.cuda_graphs)
    model, extra = profile_loaded(loaded, grid, seed=args.seed)
    model.save(args.output, extra)
    table = ", ".join(f"{t * 1e3:.1f}" for t in model.decode_table_s)
    print(f"decode l(k) ms for k=1..{len(model.decode_table_s)}: {table}", file=sys.stderr)
    print(f"context slope {model.ctx_coef_s * 1e6:.3f} us per token per request + {model.ctx_iter_coef_s * 1e6:.3f} us "
          f"per token per iteration; prefill p(n) = "
          f"{model.prefill_base_s * 1e3:.1f} ms + {model.prefill_per_token_s * 1e3:.3f} ms/token "
          f"+ {model.prefill_quad_s * 1e9:.3f} ns/token^2", file=sys.stderr)
    print(model.notes, file=sys.stderr)
    print(f"wrote {args.output}")
    return 0
