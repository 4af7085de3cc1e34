"""`memory <= LIMIT` on the embedded SmolLM2-135M: each limit runs in a fresh process (peak RSS is per
process), loads the model under the target, generates, and prints the representation chosen, the KV
budget, and the peak resident memory against the limit.

    .venv/bin/python benchmarks/memory_target.py [--limits 1GiB,700MB,500MB] [--tokens 32]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(limit_text: str, tokens: int) -> None:
    import torch

    torch.set_num_threads(1)
    from sliceserve.engine.llm import LLM
    from sliceserve.model.loader import load_model
    from sliceserve.request import SamplingParams
    from sliceserve.slo import parse_size

    limit = parse_size(limit_text)
    try:
        loaded = load_model(None, num_threads=1, memory_limit_bytes=int(limit), max_model_len=1024)
    except ValueError as exc:
        print(json.dumps({"limit": limit_text, "error": str(exc)}))
        return
    llm = LLM(loaded, policy="vllm", profile="paper-4060ti")
    start = time.perf_counter()
    out = llm.generate(["Write a haiku about small computers.", "What is the capital of France?"] * 2,
                       SamplingParams(max_tokens=tokens, ignore_eos=True), use_chat_template=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports kB
    print(json.dumps({"limit": limit_text, "limit_mib": limit / 2**20, "representation": loaded.representation,
                      "kv_blocks": loaded.num_kv_blocks, "peak_rss_mib": peak / 2**20, "under_limit": peak <= limit,
                      "tok_s": sum(len(o.token_ids) for o in out) / elapsed, "sample": out[1].text[:60]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limits", default="1GiB,700MB,500MB")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tokens)
        return 0
    print(f"{'limit':>8} {'representation':>15} {'KV blocks':>9} {'peak RSS':>10} {'under':>6} {'tok/s':>6}  sample")
    for limit in args.limits.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", limit, "--tokens", str(args.tokens)],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(f"{limit:>8} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(lines[-1])
        if "error" in r:
            print(f"{limit:>8} refused: {r['error']}")
            continue
        print(f"{limit:>8} {r['representation']:>15} {r['kv_blocks']:>9} {r['peak_rss_mib']:>7.0f} MiB "
              f"{str(r['under_limit']):>6} {r['tok_s']:>6.1f}  {r['sample']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
