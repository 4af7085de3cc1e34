"""The real executor: runs exactly the iteration a SchedulerOutput describes on the model and paged KV.

Reads requests, never changes them. Prompt chunks (or recompute chunks after a preemption) feed tokens
[num_computed_tokens, num_computed_tokens + n); decodes feed their last token at position num_tokens - 1.
K/V go to the slots named by the scheduler's block tables.
"""
from __future__ import annotations

import random
import time

import torch

from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.model.attention import AttentionMetadata, PrefillSeq
from sliceserve.model.llama import LlamaForCausalLM
from sliceserve.model.sampler import sample
from sliceserve.model.stops import StopStringState
from sliceserve.request import Request


def _slots(table: list[int], block_size: int, start: int, stop: int) -> list[int]:
    return [table[p // block_size] * block_size + p % block_size for p in range(start, stop)]


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], block_size: int,
                 tokenizer=None, device: str = "cpu", seed: int = 0) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.vocab_size = model.arch.vocab_size
        self._rng = random.Random(seed)
        self._seeds: dict[str, int] = {}
        self._stops: dict[str, StopStringState] = {}

    @property
    def num_kv_blocks(self) -> int:
        return self.kv_caches[0][0].shape[0]

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        start = time.perf_counter()
        for rid in (*sched.finished, *sched.preempted):
            self._seeds.pop(rid, None)
            self._stops.pop(rid, None)
        if sched.is_empty:
            return ModelOutput(elapsed_s=time.perf_counter() - start)
        errors: dict[str, str] = {}
        feeds: list[tuple[Request, int, int]] = []  # (request, first position, number of tokens)
        for rid, n in sched.prefill.items():
            req = sched.requests[rid]
            feeds.append((req, req.num_computed_tokens, n))
        for rid in sched.decode:
            req = sched.requests[rid]
            feeds.append((req, req.num_tokens - 1, 1))
        feeds = [f for f in feeds if not self._check(f, sched, errors)]
        sampled: dict[str, int] = {}
        stopped: set[str] = set()
        if feeds:
            logits, samplers = self._forward(feeds, sched)
            for row, req in enumerate(samplers):
                token = sample(logits[row], req.sampling_params, self._seed(req), req.num_output_tokens)
                sampled[req.req_id] = token
                if self._hits_stop_string(req, token):
                    stopped.add(req.req_id)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return ModelOutput(sampled=sampled, elapsed_s=time.perf_counter() - start, stopped=stopped, errors=errors)

    # --- helpers ---------------------------------------------------------------------------------------
    def _check(self, feed: tuple[Request, int, int], sched: SchedulerOutput, errors: dict[str, str]) -> bool:
        """Record an error (and drop the feed) for a request this iteration cannot run; True if dropped."""
        req, pos, n = feed
        table = sched.block_tables.get(req.req_id, [])
        problem = None
        if n <= 0 or pos + n > req.num_tokens:
            problem = f"asked to compute tokens [{pos}, {pos + n}) of a {req.num_tokens}-token request"
        elif len(table) * self.block_size < pos + n:
            problem = f"block table holds {len(table) * self.block_size} tokens, needs {pos + n}"
        elif any(b < 0 or b >= self.num_kv_blocks for b in table):
            problem = f"block table names blocks outside the cache (0..{self.num_kv_blocks - 1})"
        else:
            bad = [t for t in req.token_ids(pos, pos + n) if not 0 <= t < self.vocab_size]
            if bad:
                problem = f"token id {bad[0]} is outside the vocabulary (size {self.vocab_size})"
        if problem:
            errors[req.req_id] = problem
        return problem is not None

    def _forward(self, feeds: list[tuple[Request, int, int]], sched: SchedulerOutput):
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        prefills: list[PrefillSeq] = []
        decode_rows: list[int] = []
        decode_ctx: list[list[int]] = []
        logit_rows: list[int] = []
        samplers: list[Request] = []
        dev = self.device
        decoding = set(sched.decode)
        for req, pos, n in feeds:
            table = sched.block_tables[req.req_id]
            row = len(ids)
            ids.extend(req.token_ids(pos, pos + n))
            positions.extend(range(pos, pos + n))
            ctx_slots = _slots(table, bs, 0, pos + n)
            slot_mapping.extend(ctx_slots[pos:])
            if req.req_id in decoding:
                decode_rows.append(row)
                decode_ctx.append(ctx_slots)
            else:
                prefills.append(PrefillSeq(row, n, torch.tensor(ctx_slots, device=dev), self._mask(pos, n)))
            if pos + n >= req.num_tokens:
                logit_rows.append(row + n - 1)
                samplers.append(req)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slot_mapping, device=dev),
            prefills=prefills,
            decode_rows=torch.tensor(decode_rows, dtype=torch.long, device=dev),
            **self._decode_tensors(decode_ctx),
        )
        with torch.inference_mode():
            logits = self.model(torch.tensor(ids, device=dev), torch.tensor(positions, device=dev), self.kv_caches,
                                meta, torch.tensor(logit_rows, dtype=torch.long, device=dev))
        return logits, samplers

    def _mask(self, pos: int, n: int) -> torch.Tensor | None:
        if n == 1:
            return None  # a single query sees the whole prefix
        group = self.model.arch.num_heads // self.model.arch.num_kv_heads
        # Query i (position pos + i) sees keys 0..pos + i; rows repeat per folded query head.
        keys = torch.arange(pos + n, device=self.device)
        mask = keys[None, :] <= (pos + torch.arange(n, device=self.device))[:, None]
        return mask.repeat(group, 1)

    def _decode_tensors(self, ctx_slots: list[list[int]]) -> dict[str, torch.Tensor]:
        dev = self.device
        if not ctx_slots:
            return {"decode_slots": torch.zeros(0, 1, dtype=torch.long, device=dev),
                    "decode_mask": torch.zeros(0, 1, 1, 1, dtype=torch.bool, device=dev)}
        length = max(len(s) for s in ctx_slots)
        # Padding repeats the sequence's first slot: written, hence finite (the cache is uninitialised
        # memory, and a masked NaN would still poison SDPA's weighted sum), and masked out anyway.
        slots = torch.tensor([s + [s[0]] * (length - len(s)) for s in ctx_slots], device=dev)
        lens = torch.tensor([len(s) for s in ctx_slots], device=dev)
        if all(len(s) == length for s in ctx_slots):
            # No padding: SDPA without a mask takes its fused path instead of the masked math one.
            return {"decode_slots": slots, "decode_mask": None}
        mask = torch.arange(length, device=dev)[None, :] < lens[:, None]
        return {"decode_slots": slots, "decode_mask": mask[:, None, None, :]}

    def _seed(self, req: Request) -> int:
        if req.sampling_params.seed is not None:
            return req.sampling_params.seed
        if req.req_id not in self._seeds:
            self._seeds[req.req_id] = self._rng.getrandbits(62)
        return self._seeds[req.req_id]

    def _hits_stop_string(self, req: Request, token: int) -> bool:
        stops = tuple(s for s in req.sampling_params.stop if s)
        if not stops or self.tokenizer is None:
            return False
        state = self._stops.get(req.req_id)
        if state is None or len(state.token_ids) != req.num_output_tokens:
            # New, or rebuilt after a preemption: replay the output so far (its stops already failed).
            state = StopStringState(stops)
            for t in req.output_token_ids:
                state.push(self.tokenizer, t)
            self._stops[req.req_id] = state
        return state.push(self.tokenizer, token)
