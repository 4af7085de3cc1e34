"""`sliceserve generate --prompt "..."`: one prompt through the local engine; text to stdout as it is generated,
timings to stderr."""
from __future__ import annotations

import argparse
import sys


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--model", default=None,
                        help="local Hugging Face directory or GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--backend", choices=("torch", "llamacpp"), default="torch",
                        help="executor: torch (default) or llamacpp (a GGUF file on llama.cpp; pip install 'sliceserve[llamacpp]')")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default=None, help="auto (default: int8 on CPU, bf16 or fp16 on CUDA) | int8 | float32 (the exact reference) | bfloat16 | float16")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="run every decode step eagerly on CUDA instead of replaying CUDA graphs captured at start-up")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate (default: 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0 = off)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default: 0 = off)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible sampled output)")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--policy", default="slice", help="scheduling policy (default: slice)")
    parser.add_argument("--profile", default=None,
                        help="latency profile JSON from `sliceserve profile` (default: a quick measurement)")
    parser.add_argument("--num-threads", "--threads", dest="threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")


def _show(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from sliceserve.engine.llm import LLM
    from sliceserve.request import SamplingParams
    from sliceserve.server.detok import Detokenizer

    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, stop=tuple(args.stop))
    llm = LLM(args.model, policy=args.policy, device=args.device, dtype=args.dtype, profile=args.profile,
              num_threads=args.threads, backend=args.backend, cuda_graphs=args.cuda_graphs)
    # The text as it comes (stop strings and half characters held back, as a server stream does); Ctrl+C
    # leaves what was generated on the screen.
    detok = Detokenizer(llm.tokenizer, params.stop)
    try:
        out = llm.generate(args.prompt, params, use_chat_template=args.chat,
                           on_tokens=lambda _, ids: _show(detok.push(ids)))[0]
    except KeyboardInterrupt:
        _show(detok.push([], final=True) + "\n")
        raise
    if out.error:
        _show("\n" if detok.sent else "")
        raise ValueError(f"generation failed ({out.finish_reason}): {out.error}")
    print(out.text[detok.sent:])
    t = out.timings
    ms = lambda v: "-" if v is None else f"{v * 1e3:.1f} ms"  # noqa: E731
    print(f"[{len(out.prompt_token_ids)} prompt + {len(out.token_ids)} output tokens, finish={out.finish_reason}, "
          f"ttft={ms(t.ttft_s)}, tpot={ms(t.tpot_s)}, e2e={ms(t.e2e_s)}]", file=sys.stderr)
    return 0
