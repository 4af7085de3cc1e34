"""Speed of the model runner next to transformers' `generate` on the same model, dtype and threads.

    python -m sliceserve.model.bench_speed [--model PATH] [--batch-sizes 1,4,16,32] [--threads 1]

Prints decode tokens/s per batch size and prefill tokens/s for both, in one run (timings here vary up to
2x between runs, DESIGN.md, so only same-run comparisons mean anything).
"""
from __future__ import annotations

import argparse
import time

import torch

from sliceserve.core.outputs import SchedulerOutput
from sliceserve.request import Request, SamplingParams


def _requests(batch: int, prompt_len: int, vocab: int, max_tokens: int) -> list[Request]:
    gen = torch.Generator().manual_seed(0)
    return [Request(f"b{i}", torch.randint(100, vocab, (prompt_len,), generator=gen).tolist(),
                    SamplingParams(max_tokens=max_tokens, ignore_eos=True), arrival_s=0.0) for i in range(batch)]


def ours_decode(loaded, batch: int, prompt_len: int, steps: int) -> float:
    """Decode tokens/s: prefill outside the clock, then `steps` decode iterations of the whole batch."""
    runner, bs = loaded.runner, loaded.block_size
    reqs = _requests(batch, prompt_len, loaded.runner.vocab_size, steps + 1)
    per_req = -(-(prompt_len + steps + 1) // bs)
    if per_req * batch > loaded.num_kv_blocks:
        raise ValueError(f"KV cache too small for batch {batch}: raise --kv-cache-mib")
    tables = {r.req_id: list(range(i * per_req, (i + 1) * per_req)) for i, r in enumerate(reqs)}
    reqmap = {r.req_id: r for r in reqs}
    for r in reqs:
        out = runner.execute(SchedulerOutput(prefill={r.req_id: prompt_len}, requests={r.req_id: r},
                                             block_tables=tables))
        r.num_computed_tokens = prompt_len
        r.output_token_ids.append(out.sampled[r.req_id])
    elapsed = 0.0
    for _ in range(steps):
        out = runner.execute(SchedulerOutput(decode=list(reqmap), requests=reqmap, block_tables=tables))
        elapsed += out.elapsed_s
        for r in reqs:  # the benchmark plays the scheduler's part
            r.num_computed_tokens += 1
            r.output_token_ids.append(out.sampled[r.req_id])
    runner.execute(SchedulerOutput(finished=list(reqmap)))
    return batch * steps / elapsed


def ours_prefill(loaded, prompt_len: int) -> float:
    r = _requests(1, prompt_len, loaded.runner.vocab_size, 1)[0]
    table = {r.req_id: list(range(-(-prompt_len // loaded.block_size)))}
    out = loaded.runner.execute(SchedulerOutput(prefill={r.req_id: prompt_len}, requests={r.req_id: r}, block_tables=table))
    return prompt_len / out.elapsed_s


def hf_decode(model, batch: int, prompt_len: int, steps: int, vocab: int) -> float:
    ids = torch.tensor([r.prompt_token_ids for r in _requests(batch, prompt_len, vocab, 1)])
    mask = torch.ones_like(ids)
    kwargs = dict(attention_mask=mask, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        t1 = time.perf_counter()
        model.generate(ids, max_new_tokens=steps + 1, min_new_tokens=steps + 1, **kwargs)
        t2 = time.perf_counter()
    return batch * steps / ((t2 - t1) - (t1 - t0))


def hf_prefill(model, prompt_len: int, vocab: int) -> float:
    ids = torch.tensor([_requests(1, prompt_len, vocab, 1)[0].prompt_token_ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(ids, use_cache=True)
        return prompt_len / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM

    from sliceserve.model.loader import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF directory or GGUF file (default: embedded SmolLM2-135M)")
    p.add_argument("--batch-sizes", default="1,4,16,32")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=16, help="decode iterations timed per batch size")
    p.add_argument("--prefill-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kv-cache-mib", type=int, default=512)
    args = p.parse_args(argv)
    loaded = load_model(args.model, num_threads=args.threads, kv_cache_memory_bytes=args.kv_cache_mib << 20)
    from sliceserve.model.loader import _model_dir  # the same weights, as transformers loads them

    hf = AutoModelForCausalLM.from_pretrained(str(_model_dir(args.model)), dtype=torch.float32).eval()
    vocab = loaded.runner.vocab_size
    print(f"model {loaded.model_name}  dtype {loaded.dtype}  threads {torch.get_num_threads()}  "
          f"prompt {args.prompt_len}  decode steps {args.steps}")
    ours_decode(loaded, 1, 16, 2)  # warm-up (first-call allocations)
    hf_decode(hf, 1, 16, 2, vocab)
    print(f"{'what':<22}{'sliceserve tok/s':>18}{'transformers tok/s':>20}{'ratio':>8}")
    for b in (int(x) for x in args.batch_sizes.split(",")):
        o = ours_decode(loaded, b, args.prompt_len, args.steps)
        h = hf_decode(hf, b, args.prompt_len, args.steps, vocab)
        print(f"{'decode batch ' + str(b):<22}{o:>18.1f}{h:>20.1f}{o / h:>8.2f}")
    o, h = ours_prefill(loaded, args.prefill_len), hf_prefill(hf, args.prefill_len, vocab)
    print(f"{'prefill ' + str(args.prefill_len) + ' tokens':<22}{o:>18.1f}{h:>20.1f}{o / h:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
