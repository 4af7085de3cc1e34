"""Driving the real runner through EngineCore with the vLLM policy, as the engine does."""
from __future__ import annotations

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import Request, SamplingParams


def run_engine(loaded, prompts: list[list[int]], params: SamplingParams | list[SamplingParams], *, eos: bool = False,
               max_num_batched_tokens: int = 512, num_kv_blocks: int | None = None, max_num_seqs: int = 16,
               stagger: int = 0) -> tuple[list[Request], EngineCore]:
    """Run `prompts` to completion; `stagger` adds one new request every `stagger` steps (0: all at once)."""
    config = SchedulerConfig(policy="vllm", max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                             max_model_len=loaded.max_model_len, block_size=loaded.block_size,
                             num_kv_blocks=num_kv_blocks or loaded.num_kv_blocks)
    engine = EngineCore(make_scheduler("vllm", config, LatencyModel([0.05])), loaded.runner)
    plist = params if isinstance(params, list) else [params] * len(prompts)
    reqs = [Request(f"r{i}", list(p), sp, arrival_s=0.0,
                    eos_token_id=loaded.eos_token_ids[0] if eos else None) for i, (p, sp) in enumerate(zip(prompts, plist))]
    pending = list(reqs)
    now, steps = 0.0, 0
    while pending or engine.has_unfinished():
        if pending and (stagger == 0 or steps % stagger == 0):
            batch = pending if stagger == 0 else pending[:1]
            for r in batch:
                assert engine.add_request(r, now), r.error
            pending = pending[len(batch):]
        result = engine.step(now)
        now = result.end_s
        steps += 1
        assert steps < 10_000
    return reqs, engine


def hf_greedy(model_dir, prompt: list[int], max_new_tokens: int, stop_at_eos: bool = False,
              device: str = "cpu") -> list[int]:
    """transformers' own greedy generate: the reference our runner must match token for token."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device).eval()
    extra = {} if stop_at_eos else {"min_new_tokens": max_new_tokens}
    out = model.generate(torch.tensor([prompt], device=device),
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
                         max_new_tokens=max_new_tokens, do_sample=False, **extra)
    return out[0, len(prompt):].tolist()
