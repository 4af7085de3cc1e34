"""The real executor: runs exactly the iteration a SchedulerOutput describes on the model and paged KV.

Reads requests, never changes them. Prompt chunks (or recompute chunks after a preemption) feed tokens
[num_computed_tokens, num_computed_tokens + n); decodes feed their last token at position num_tokens - 1.
K/V go to the slots named by the scheduler's block tables.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.model.attention import AttentionMetadata, DecodeGroup, PrefillSeq
from sliceserve.model.cuda_graphs import DecodeBuckets, StaticDecode
from sliceserve.model.decode_groups import group_by_length
from sliceserve.model.llama import LlamaForCausalLM
from sliceserve.model.logits_processing import prompt_logprobs
from sliceserve.model.pooling import PromptPooler
from sliceserve.model.request_sampling import RequestSampling
from sliceserve.model.single_decode import SingleDecode
from sliceserve.request import Request


CPU_GROUP_OVERHEAD_TOKENS = 128.0


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], block_size: int,
                 tokenizer=None, device: str = "cpu", seed: int = 0, num_kv_blocks: int | None = None,
                 decode_buckets: DecodeBuckets | None = None, cuda_graphs: bool = True) -> None:
        """`num_kv_blocks`: blocks the scheduler may hand out (default: all of the cache); a static decode
        path (`decode_buckets`) needs one more in the cache, its padding rows' scratch block. With buckets,
        decode-only steps run padded to them, captured as CUDA graphs at start-up on CUDA when
        `cuda_graphs` (sliceserve.model.cuda_graphs); uncaptured otherwise (the CPU tests' path)."""
        self.model = model.fuse_projections()  # after any weight loading or quantisation, before the first step
        self.kv_caches = kv_caches
        self._num_kv_blocks = kv_caches[0][0].shape[0] if num_kv_blocks is None else num_kv_blocks
        self.block_size = block_size
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # cuDNN's SDPA builds an execution plan per new shape, and a decode batch's padded context grows
            # every step: on an H100 each unseen (batch, length) shape cost 40-50 ms on a 20 ms step, so the
            # fitted profile (repeated shapes) under-predicted real runs 3-4x. Flash / memory-efficient /
            # math kernels need no plans.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.vocab_size = model.arch.vocab_size
        self.sampling = RequestSampling(tokenizer, seed)
        self.pooler = PromptPooler()   # embedding requests: their prompt's hidden states, pooled
        self._offsets_t: torch.Tensor | None = None
        # A separate attention call costs about as much as this many padded context tokens (measured on a
        # 2-vCPU EPYC, 1 thread). On CUDA a step is launch-bound and padding nearly free: one call.
        self.decode_group_overhead_tokens = CPU_GROUP_OVERHEAD_TOKENS if self.device.type == "cpu" else float("inf")
        self.static_decode: StaticDecode | None = None
        # Decode-only steps on CPU take the few-call pass (sliceserve.model.single_decode; one sequence, or up
        # to 16 on int8): at batch 1 the general pass's per-operator overhead was as large as the int8 matmuls.
        self.single_decode = SingleDecode(self.model, kv_caches) \
            if self.device.type == "cpu" and SingleDecode.supported(self.model) else None
        if decode_buckets is not None:
            self.static_decode = StaticDecode(self.model, kv_caches, block_size, self._num_kv_blocks, decode_buckets,
                                              self.device)
            if cuda_graphs and self.device.type == "cuda":
                self.static_decode.capture()   # at start-up: a lazy capture would stall a real step

    @property
    def num_kv_blocks(self) -> int:
        return self._num_kv_blocks

    def zero_kv_blocks(self, blocks: list[int]) -> None:
        """Set these cache blocks' K and V to zero in every layer (the profiler's synthetic contexts)."""
        index = torch.tensor(blocks, dtype=torch.long, device=self.device)
        for k, v in self.kv_caches:
            k.index_fill_(0, index, 0)
            v.index_fill_(0, index, 0)

    def for_profiling(self):
        """This runner with synthetic contexts made of defined values (sliceserve.model.profiling_view)."""
        from sliceserve.model.profiling_view import DefinedContextRunner

        return DefinedContextRunner(self)

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        start = time.perf_counter()
        for rid in (*sched.finished, *sched.preempted):
            self.sampling.forget(rid)
            self.pooler.forget(rid)
        if sched.is_empty:
            return ModelOutput(elapsed_s=time.perf_counter() - start)
        errors: dict[str, str] = {}
        feeds = [f for f in sched.feeds() if not self._check(f, sched, errors)]
        out = ModelOutput(errors=errors)
        if feeds:
            logits, samplers, prompt_rows = self._forward(feeds, sched, out.embeddings)
            sample_logits = logits[: len(samplers)]
            greedy = sample_logits.argmax(-1).tolist()  # one call for the whole batch instead of one per row
            for row, req in enumerate(samplers):
                try:
                    if self.sampling.is_plain(req):
                        token = greedy[row]
                    else:
                        token, entry = self.sampling.choose(req, sample_logits[row].float().cpu())
                        if entry is not None:
                            out.logprobs[req.req_id] = entry
                except Exception as exc:  # noqa: BLE001 - one row's failure ends that request, not the batch
                    errors[req.req_id] = f"sampling failed: {type(exc).__name__}: {exc}"
                    continue
                out.sampled[req.req_id] = token
                if self.sampling.ends(req, token):
                    out.stopped.add(req.req_id)
            for req, first, pos, n in prompt_rows:
                out.prompt_logprobs[req.req_id] = prompt_logprobs(req, logits[first:first + n].float().cpu(), pos)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out.elapsed_s = time.perf_counter() - start
        return out

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

    def _forward(self, feeds: list[tuple[Request, int, int]], sched: SchedulerOutput,
                 embeddings: dict[str, list[float]]):
        """One forward pass over the feeds: (logits, the requests that sample from its first rows, prompt-logprob
        rows). Embedding requests' chunks give hidden states instead of logits: their pooled vectors, once a
        prompt is complete, go to `embeddings`."""
        decoding = set(sched.decode)
        # An embedding request whose last prompt token a policy scheduled as a "decode" is still a prompt chunk.
        chunks = [f for f in feeds if f[0].req_id not in decoding or f[0].embed]
        decodes = [f for f in feeds if f[0].req_id in decoding and not f[0].embed]
        if not chunks:
            logits = self._decode_only(decodes, sched)
            if logits is not None:
                return logits, [r for r, _, _ in decodes], []
        batch = _Batch()
        for req, pos, n in chunks:
            self._add_chunk(batch, req, pos, n, sched.block_tables[req.req_id])
        self._add_decodes(batch, decodes, sched)
        return self._run_batch(batch, embeddings)

    def _decode_only(self, decodes: list[tuple[Request, int, int]], sched: SchedulerOutput) -> torch.Tensor | None:
        """Logits of a step with no prompt chunk through a specialised pass: the padded static-shape one (a
        graph replay on CUDA) or, on CPU, the few-call decode step (single_decode.py: one sequence, or up to 16
        on int8); None when none applies (the general pass)."""
        if self.static_decode is not None:
            return self.static_decode.run([r.token_ids(pos, pos + 1)[0] for r, pos, _ in decodes],
                                          [(sched.block_tables[r.req_id], pos + 1) for r, pos, _ in decodes])
        if self.single_decode is None or not decodes or not self.single_decode.takes(len(decodes)):
            return None
        if len(decodes) > 1:   # int8 only: the scripted step of up to FUSED_MAX_ROWS sequences
            groups, write = self._decode_groups([(sched.block_tables[r.req_id], pos + 1) for r, pos, _ in decodes], 0)
            with torch.inference_mode():
                return self.single_decode.run_many([r.token_ids(pos, pos + 1)[0] for r, pos, _ in decodes],
                                                   [pos for _, pos, _ in decodes], groups, write)
        req, pos, _ = decodes[0]
        table = sched.block_tables[req.req_id]
        used = table[:-(-(pos + 1) // self.block_size)]
        if all(b2 == b1 + 1 for b1, b2 in zip(used, used[1:])):
            context: int | torch.Tensor = used[0] * self.block_size   # consecutive blocks: read as a view
        else:
            context = self._slot_range(table, pos + 1)
        with torch.inference_mode():
            return self.single_decode.run(req.token_ids(pos, pos + 1)[0], pos, context)

    def _add_chunk(self, batch: "_Batch", req: Request, pos: int, n: int, table: list[int]) -> None:
        """A prompt (or recompute) chunk: tokens [pos, pos + n) of `req`, rows appended to `batch`."""
        row = len(batch.ids)
        batch.ids.extend(req.token_ids(pos, pos + n))
        ctx_slots = self._slot_range(table, pos + n)
        batch.slots.append(ctx_slots[pos:])
        batch.positions.append(torch.arange(pos, pos + n, device=self.device))
        batch.prefills.append(PrefillSeq(row, n, ctx_slots, self._mask(pos, n), causal=pos == 0 and n > 1))
        if req.embed:
            batch.pooled.append((req, pos, row, row + n))
        elif pos + n >= req.num_tokens:
            batch.logit_rows.append(row + n - 1)
            batch.samplers.append(req)
        if req.sampling_params.prompt_logprobs is not None and pos + 1 < req.num_prompt_tokens:
            batch.all_rows.append((req, row, pos, n))

    def _add_decodes(self, batch: "_Batch", decodes: list[tuple[Request, int, int]], sched: SchedulerOutput) -> None:
        """The decoding sequences' single tokens, after the chunks' rows, and their attention groups."""
        batch.groups, last_slots = self._decode_groups(
            [(sched.block_tables[r.req_id], pos + 1) for r, pos, _ in decodes], len(batch.ids))
        for req, pos, _ in decodes:
            batch.ids.extend(req.token_ids(pos, pos + 1))
            batch.logit_rows.append(len(batch.ids) - 1)
            batch.samplers.append(req)
        if decodes:
            batch.slots.append(last_slots)
            batch.positions.append(torch.tensor([pos for _, pos, _ in decodes], device=self.device))

    def _run_batch(self, batch: "_Batch", embeddings: dict[str, list[float]]):
        """The model over the flattened batch: sampling rows first, prompt-logprob rows after them (rows
        [first, first + n) of the result); pooled embedding vectors go to `embeddings`."""
        dev = self.device
        meta = AttentionMetadata(slot_mapping=_cat(batch.slots), prefills=batch.prefills,
                                 decode_groups=batch.groups)
        prompt_rows = []
        for req, row, pos, n in batch.all_rows:
            prompt_rows.append((req, len(batch.logit_rows), pos, n))
            batch.logit_rows.extend(range(row, row + n))
        hidden_rows = None
        if batch.pooled:
            hidden_rows = torch.cat([torch.arange(row, end) for _, _, row, end in batch.pooled]).to(dev)
        with torch.inference_mode():
            out = self.model(torch.tensor(batch.ids, device=dev), _cat(batch.positions), self.kv_caches, meta,
                             torch.tensor(batch.logit_rows, dtype=torch.long, device=dev), hidden_rows)
        if hidden_rows is None:
            return out, batch.samplers, prompt_rows
        logits, hidden = out
        at = 0
        for req, pos, row, end in batch.pooled:
            vec = self.pooler.add(req.req_id, pos, hidden[at:at + end - row], end - row + pos >= req.num_tokens)
            at += end - row
            if vec is not None:
                embeddings[req.req_id] = vec
        return logits, batch.samplers, prompt_rows

    def _slot_range(self, table: list[int], length: int) -> torch.Tensor:
        """Cache slots of positions [0, length) of a sequence with block table `table`."""
        bs = self.block_size
        blocks = torch.tensor(table[:-(-length // bs)], device=self.device)
        return (blocks[:, None] * bs + self._offsets()).reshape(-1)[:length]

    def _offsets(self) -> torch.Tensor:
        if self._offsets_t is None:
            self._offsets_t = torch.arange(self.block_size, device=self.device)
        return self._offsets_t

    def _mask(self, pos: int, n: int) -> torch.Tensor | None:
        if n == 1 or pos == 0:
            return None  # a single query sees the whole prefix; a chunk from position 0 is plain causal
        # Query i (position pos + i) sees keys 0..pos + i.
        keys = torch.arange(pos + n, device=self.device)
        return keys[None, :] <= (pos + torch.arange(n, device=self.device))[:, None]

    def _decode_groups(self, seqs: list[tuple[list[int], int]], first_row: int
                       ) -> tuple[list[DecodeGroup], torch.Tensor | None]:
        """Attention groups of the decoding sequences (block table, context length), whose rows start at
        `first_row`, and the slot each one's new token is written to (in row order)."""
        if not seqs:
            return [], None
        groups = []
        last = torch.empty(len(seqs), dtype=torch.long, device=self.device)
        for members in group_by_length([n for _, n in seqs], self.decode_group_overhead_tokens):
            group, group_last = self._decode_group([seqs[i] for i in members],
                                                   torch.tensor(members, device=self.device) + first_row)
            last[group.rows - first_row] = group_last
            groups.append(group)
        return groups, last

    def _decode_group(self, seqs: list[tuple[list[int], int]], rows: torch.Tensor) -> tuple[DecodeGroup, torch.Tensor]:
        """Slots [B, L] of each sequence's context, padded to the longest; and each one's last slot."""
        dev, bs = self.device, self.block_size
        length = max(n for _, n in seqs)
        nblocks = -(-length // bs)
        # Short tables are padded with their own first block; the positions that lands on are replaced below.
        tables = torch.tensor([t[:nblocks] + [t[0]] * (nblocks - len(t[:nblocks])) for t, _ in seqs], device=dev)
        slots = (tables[:, :, None] * bs + self._offsets()).reshape(len(seqs), -1)[:, :length]
        lens = torch.tensor([n for _, n in seqs], device=dev)
        last = slots.gather(1, (lens - 1)[:, None]).squeeze(1)
        if all(n == length for _, n in seqs):
            # No padding: SDPA without a mask takes its fused path instead of the masked math one.
            span = None
            if len(seqs) == 1:
                used = seqs[0][0][:nblocks]
                if used[-1] - used[0] == nblocks - 1 and all(b2 == b1 + 1 for b1, b2 in zip(used, used[1:])):
                    span = (used[0] * bs, used[0] * bs + length)
            return DecodeGroup(rows, slots, None, span), last
        valid = torch.arange(length, device=dev)[None, :] < lens[:, None]
        # Padding repeats the sequence's first slot: written, hence finite (the cache is uninitialised
        # memory, and a masked NaN would still poison SDPA's weighted sum), and masked out anyway.
        slots = torch.where(valid, slots, slots[:, :1])
        return DecodeGroup(rows, slots, valid[:, None, None, :]), last


@dataclass
class _Batch:
    """One forward pass's flattened rows, built by ModelRunner._add_chunk / _add_decodes."""
    ids: list[int] = field(default_factory=list)
    slots: list[torch.Tensor] = field(default_factory=list)       # where each row's K/V goes, in row order
    positions: list[torch.Tensor] = field(default_factory=list)
    prefills: list[PrefillSeq] = field(default_factory=list)
    groups: list[DecodeGroup] = field(default_factory=list)
    logit_rows: list[int] = field(default_factory=list)
    samplers: list[Request] = field(default_factory=list)
    pooled: list[tuple[Request, int, int, int]] = field(default_factory=list)   # (request, position, rows from, to)
    all_rows: list[tuple[Request, int, int, int]] = field(default_factory=list)  # chunks wanting every position's logits


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if len(parts) > 1 else parts[0]
