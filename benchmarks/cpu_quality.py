"""Quality of the CPU default (int8 dynamic) against the fp32 reference on the embedded SmolLM2-135M-Instruct:
perplexity on the shipped public-domain prose (tests/data/public_domain_prose.txt) and greedy agreement on 20
chat prompts (each side generates all 20 in one batch, `--max-tokens` tokens each).

    PYTHONPATH=. .venv/bin/python benchmarks/cpu_quality.py [--max-tokens 32] [--window 512]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

PROSE = Path(__file__).resolve().parents[1] / "tests" / "data" / "public_domain_prose.txt"
PROMPTS = [
    "What is the capital of France?", "Name three colours.", "Write a haiku about small computers.",
    "Explain photosynthesis in one sentence.", "What is 12 times 7?", "Give me a synonym for happy.",
    "Who wrote Romeo and Juliet?", "How many legs does a spider have?", "Translate 'good morning' into Spanish.",
    "What is the boiling point of water in Celsius?", "Suggest a name for a pet goldfish.",
    "What does a CPU do?", "List two planets of the solar system.", "Why is the sky blue?",
    "Write one sentence about the sea.", "What is the opposite of cold?", "How do I make a cup of tea?",
    "What language is spoken in Brazil?", "Describe a cat in five words.", "What is the largest ocean?",
]


def main(argv: list[str] | None = None) -> int:
    from sliceserve.engine.llm import LLM
    from sliceserve.model.loader import load_model
    from sliceserve.model.quant.quality import greedy_agreement, perplexity, read_prose
    from sliceserve.request import SamplingParams

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--window", type=int, default=512, help="tokens per perplexity window")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sides = {"fp32": load_model(dtype="float32", num_threads=1, kv_cache_memory_bytes=128 << 20),
             "default": load_model(num_threads=1, kv_cache_memory_bytes=128 << 20)}
    ids = sides["fp32"].tokenizer.encode(read_prose(PROSE))
    print(f"embedded SmolLM2-135M-Instruct; prose: {len(ids)} tokens of {PROSE.name}; load average "
          f"{os.getloadavg()[0]:.2f}")
    ppl = {name: perplexity(loaded, ids, args.window) for name, loaded in sides.items()}
    print(f"perplexity  fp32 {ppl['fp32']:.3f}  default ({sides['default'].representation}) {ppl['default']:.3f}"
          f"  ratio {ppl['default'] / ppl['fp32']:.4f}  (goal: within 3 %)")
    sp = SamplingParams(max_tokens=args.max_tokens)   # greedy (temperature 0), stops at EOS
    outs = {name: [o.token_ids for o in LLM(loaded, policy="vllm", profile="paper-4060ti").generate(
        PROMPTS, sp, use_chat_template=True)] for name, loaded in sides.items()}
    same, share = greedy_agreement(outs["fp32"], outs["default"])
    print(f"greedy agreement on {len(PROMPTS)} prompts, {args.max_tokens} tokens max: {same}/{len(PROMPTS)} "
          f"identical; mean {share:.1%} of each output before the first differing token")
    tok = sides["fp32"].tokenizer
    for i in range(len(PROMPTS)):
        if outs["fp32"][i] != outs["default"][i]:
            print(f"  differs: {PROMPTS[i]!r}\n    fp32:    {tok.decode(outs['fp32'][i])[:90]!r}\n"
                  f"    default: {tok.decode(outs['default'][i])[:90]!r}")
            break
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
