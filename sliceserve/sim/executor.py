"""The simulated executor: iteration time from a latency model (the 'true' device), dummy tokens (and empty
vectors for embedding requests: their prompt's time only)."""
from __future__ import annotations

import random

from sliceserve.core.latency import LatencyModel, prefill_shape
from sliceserve.core.outputs import ModelOutput, SchedulerOutput

DUMMY_TOKEN = 0


class SimulatedExecutor:
    def __init__(self, device: LatencyModel, noise: float = 0.0, seed: int = 0) -> None:
        """`noise`: standard deviation of a multiplicative lognormal factor on each iteration's time."""
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}")
        self.device = device
        self.noise = noise
        self.slowdown = 1.0  # >1 makes the device slower (fault injection, controller tests)
        self._rng = random.Random(seed)

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        decode, prefill = sched.decode, sched.prefill
        if not decode and not prefill:
            return ModelOutput()
        reqs = sched.requests
        sampled = dict.fromkeys(decode, DUMMY_TOKEN)
        # A policy may schedule an embedding request's last prompt token as a decode: it ends with a vector.
        embeddings: dict[str, list[float]] = {rid: [] for rid in decode if reqs[rid].embed}
        for rid in embeddings:
            del sampled[rid]
        prefill_tokens = 0
        for rid, n in prefill.items():
            prefill_tokens += n
            req = reqs[rid]
            if req.num_computed_tokens + n >= len(req.prompt_token_ids) + len(req.output_token_ids):
                if req.embed:     # prefill-only work: the prompt's time, no vector worth computing here
                    embeddings[rid] = []
                else:
                    sampled[rid] = DUMMY_TOKEN
        k = len(decode)
        ctxs = [reqs[rid].num_computed_tokens for rid in decode]
        ctx = sum(ctxs) / k if k else 0.0
        # A chunk's attention over what its request already cached costs (LatencyModel.prefill_attn_s).
        _, prefix = prefill_shape((n, reqs[rid].num_computed_tokens) for rid, n in prefill.items())
        elapsed = self.device.iteration_time(k, ctx, prefill_tokens, max(ctxs) if k else None, prefix) * self.slowdown
        if self.noise:
            elapsed *= self._rng.lognormvariate(0.0, self.noise)
        return ModelOutput(sampled=sampled, elapsed_s=elapsed, embeddings=embeddings)
