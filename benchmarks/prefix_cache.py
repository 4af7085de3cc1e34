"""Prefix cache on the embedded SmolLM2-135M: requests sharing a ~200-token system prompt, one after
another (the common edge case: one assistant persona, many questions). Prints mean TTFT with and without
the cache, the hit rate, and whether greedy outputs are identical.

    .venv/bin/python benchmarks/prefix_cache.py [--requests 8] [--tokens 8]
"""
from __future__ import annotations

import argparse
import statistics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=8)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from sliceserve.engine.llm import LLM
    from sliceserve.model.loader import load_model
    from sliceserve.request import SamplingParams

    loaded = load_model(None, num_threads=1, kv_cache_memory_bytes=128 << 20, max_model_len=1024)
    system = ("You are a careful, friendly assistant running on a small device with limited memory. Answer "
              "in one or two short sentences, avoid speculation, say when you do not know, never invent "
              "facts, keep units metric, prefer plain words over jargon, and do not repeat the question. ")
    questions = ["What is the capital of France?", "Name a prime number.", "What colour is the sky?",
                 "How many legs has a spider?", "What is water made of?", "Who wrote Hamlet?",
                 "What is 2 plus 2?", "Which planet is largest?"]
    tok = loaded.tokenizer
    while len(tok.encode(system)) < 200:
        system += "Be concise. "
    prompts = [system + questions[i % len(questions)] for i in range(args.requests)]
    params = SamplingParams(max_tokens=args.tokens, ignore_eos=True)
    results = {}
    for enabled in (False, True):
        llm = LLM(loaded, policy="vllm", profile="paper-4060ti", enable_prefix_caching=enabled)
        llm.generate("warm-up", SamplingParams(max_tokens=2))
        outs = [llm.generate(p, params)[0] for p in prompts]
        kv = llm.scheduler.kv
        results[enabled] = (outs, getattr(kv, "hit_rate", 0.0))
    n_system = len(tok.encode(system))
    print(f"{args.requests} requests, shared system prompt {n_system} tokens, prompts "
          f"{min(len(o.prompt_token_ids) for o in results[True][0])}-"
          f"{max(len(o.prompt_token_ids) for o in results[True][0])} tokens, {args.tokens} output tokens each")
    for enabled, (outs, hit) in results.items():
        ttft = [o.timings.ttft_s * 1e3 for o in outs]
        print(f"prefix cache {'on ' if enabled else 'off'}: TTFT mean {statistics.mean(ttft):7.1f} ms, "
              f"after the first {statistics.mean(ttft[1:]):7.1f} ms, first {ttft[0]:7.1f} ms; hit rate {hit:.2f}")
    same = [a.token_ids for a in results[False][0]] == [b.token_ids for b in results[True][0]]
    print(f"greedy outputs identical with and without the cache: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
