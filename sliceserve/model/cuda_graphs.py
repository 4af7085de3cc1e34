"""Decode steps at static shapes, replayed as CUDA graphs.

Why: on an H100 the embedded 135M model is launch-bound. An eager decode step issues ~740 kernel launches
that take 17-30 ms of host time (varying with the host CPU's speed) for ~7 ms of GPU work, so steps were
slow and irregular, and the latency model's per-iteration error stayed above 10 %. A CUDA graph replays a
whole captured step with one launch.

A graph fixes every shape, so a decode batch is padded to a bucket: its size up to the next bucket batch
size, its longest context up to the next bucket length. Padding rows are harmless by construction:
  - each writes its K/V to a scratch slot that no request owns (the spare block past the scheduler's
    blocks: the loader allocates one more block than it hands out) and attends only to that slot, which it
    has just written, so it reads finite values (the cache is uninitialised memory, and a masked NaN
    still poisons SDPA's weighted sum);
  - context padding of a real row repeats the row's first slot (written, hence finite) and is masked out,
    as the eager path does (runner._decode_group).
Rows are independent everywhere in the model (matmuls, norms, attention per row), so padding rows cannot
change real rows' results.

Everything a step needs, token ids, context lengths and block tables, is packed on the host into one
int64 tensor and copied into a static input buffer in one transfer; the slot indices, mask, positions and
write slots are computed from it inside the graph. The same padded pass runs uncaptured where CUDA graphs
don't exist (CPU), which is how its correctness is tested there.

Graphs are captured at start-up, never lazily: capturing costs a warm-up and a capture (tens of ms), and
a first use of a shape in the middle of serving would stall that real step (the cuDNN plan problem of
docs/results/engine-speed.md). Shapes outside the buckets run eagerly.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from sliceserve.model.attention import AttentionMetadata, DecodeGroup

log = logging.getLogger(__name__)

# Shortest context bucket: below it padding is cheap and more buckets would only add capture time.
MIN_CONTEXT_BUCKET = 256


@dataclass(frozen=True)
class DecodeBuckets:
    """The static shapes: batch sizes and context lengths (ascending; lengths multiples of the block size)."""
    batch_sizes: tuple[int, ...]
    context_lens: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "context_lens"):
            values = getattr(self, name)
            if not values or list(values) != sorted(set(values)) or values[0] <= 0:
                raise ValueError(f"decode buckets: {name} must be ascending positive integers, got {values!r}")

    def pick(self, batch: int, longest: int) -> tuple[int, int] | None:
        """The smallest bucket (batch size, context length) holding this batch; None if none does."""
        b = next((s for s in self.batch_sizes if s >= batch), None)
        length = next((n for n in self.context_lens if n >= longest), None)
        return None if b is None or length is None else (b, length)

    def shapes(self) -> list[tuple[int, int]]:
        return [(b, n) for b in self.batch_sizes for n in self.context_lens]


def default_buckets(max_batch: int, max_len: int, block_size: int) -> DecodeBuckets:
    """Batch sizes 1, 2, 4, 8, 16, 24, 32, then every 16 (48, 64, ...), and `max_batch`; context lengths
    powers of two from 256 and `max_len`, each rounded up to whole blocks. Padding a batch of 17 to 24
    costs little on a launch-bound GPU; the context buckets keep attention from reading up to max_len
    for every step (at batch 32 and 8192 tokens that gather is 6 GB of memory traffic a step)."""
    if max_batch <= 0 or max_len <= 0:
        raise ValueError(f"decode buckets need a positive batch and length, got {max_batch}, {max_len}")
    sizes = {s for s in (1, 2, 4, 8, 16, 24, 32) if s < max_batch} | {max_batch}
    sizes.update(range(48, max_batch, 16))
    lens, n = {max_len}, MIN_CONTEXT_BUCKET
    while n < max_len:
        lens.add(n)
        n *= 2
    whole = {-(-n // block_size) * block_size for n in lens}
    return DecodeBuckets(tuple(sorted(sizes)), tuple(sorted(whole)))


class StaticDecode:
    """The padded static-shape decode pass over a runner's model and KV cache, and its captured graphs."""

    def __init__(self, model: torch.nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], block_size: int,
                 scratch_block: int, buckets: DecodeBuckets, device: torch.device) -> None:
        if kv_caches[0][0].shape[0] <= scratch_block:
            raise ValueError(f"static decode needs a spare KV block {scratch_block} past the scheduler's blocks")
        for length in buckets.context_lens:
            if length % block_size:
                raise ValueError(f"context bucket {length} is not a whole number of {block_size}-token blocks")
        self.model, self.kv_caches, self.block_size = model, kv_caches, block_size
        self.scratch_block, self.buckets, self.device = scratch_block, buckets, device
        max_b, max_len = buckets.batch_sizes[-1], buckets.context_lens[-1]
        # Row layout of the packed inputs: [token id, context length, block table (length / block_size)].
        self._inputs = torch.zeros(max_b * (2 + max_len // block_size), dtype=torch.long, device=device)
        self._rows = torch.arange(max_b, device=device)
        self._keys = torch.arange(max_len, device=device)
        self._offsets = torch.arange(block_size, device=device)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.capture_s = 0.0      # start-up cost of capture(), reported by the loader's callers
        self.capture_bytes = 0    # device memory the graphs hold (their pool and outputs)

    # --- one step --------------------------------------------------------------------------------------
    def run(self, token_ids: list[int], seqs: list[tuple[list[int], int]]) -> torch.Tensor | None:
        """fp32 logits [len(seqs), vocab] of one decode step (sequences' block table and context length,
        the new token included); None when no bucket holds it (the caller runs it eagerly)."""
        bucket = self.buckets.pick(len(seqs), max(n for _, n in seqs))
        if bucket is None:
            return None
        packed = self._pack(token_ids, seqs, *bucket)
        entry = self.graphs.get(bucket)
        if entry is not None:
            graph, logits = entry
            graph.replay()
        else:
            with torch.inference_mode():
                logits = self._forward(packed, bucket[1])
        return logits[:len(seqs)]

    def _pack(self, token_ids: list[int], seqs: list[tuple[list[int], int]], batch: int, length: int) -> torch.Tensor:
        """Fill the static input buffer for this bucket (one host-to-device copy) and return its view."""
        nblocks = length // self.block_size
        flat: list[int] = []
        for tok, (table, n) in zip(token_ids, seqs):
            used = table[:nblocks]
            # Blocks past the table are padded with its first; their positions are masked out.
            flat += [tok, n, *used, *[used[0]] * (nblocks - len(used))]
        # Padding rows: context length 1 at the scratch block's first slot, written by the row itself.
        flat += [0, 1, *[self.scratch_block] * nblocks] * (batch - len(seqs))
        view = self._view(batch, length)
        view.view(-1).copy_(torch.tensor(flat, dtype=torch.long), non_blocking=False)
        return view

    def _view(self, batch: int, length: int) -> torch.Tensor:
        width = 2 + length // self.block_size
        return self._inputs[:batch * width].view(batch, width)

    def _forward(self, packed: torch.Tensor, length: int) -> torch.Tensor:
        """The whole padded step from the packed inputs: what a graph captures, and the CPU path runs."""
        batch = packed.shape[0]
        ids, lens, tables = packed[:, 0], packed[:, 1], packed[:, 2:]
        slots = (tables[:, :, None] * self.block_size + self._offsets).reshape(batch, length)
        write = slots.gather(1, (lens - 1)[:, None]).squeeze(1)   # where each new token's K/V goes
        valid = self._keys[None, :length] < lens[:, None]
        slots = torch.where(valid, slots, slots[:, :1])
        rows = self._rows[:batch]
        meta = AttentionMetadata(slot_mapping=write, prefills=[],
                                 decode_groups=[DecodeGroup(rows, slots, valid[:, None, None, :])])
        return self.model(ids, lens - 1, self.kv_caches, meta, rows)

    # --- start-up --------------------------------------------------------------------------------------
    def capture(self) -> None:
        """Capture every bucket (CUDA only). Largest first, in one memory pool: the smaller graphs then
        reuse the larger ones' intermediate memory instead of each holding its own."""
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        torch.cuda.synchronize(self.device)
        free_before = torch.cuda.mem_get_info(self.device)[0]
        start = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(self.device)
        with torch.inference_mode():
            for batch, length in sorted(self.buckets.shapes(), reverse=True):
                # All rows are padding rows: warm-up and capture write only to the scratch block.
                packed = self._pack([], [], batch, length)
                # Warm-up off the capture: lazy initialisation (rotary tables, cuBLAS handles and
                # workspaces, kernel selection) must not happen inside it.
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self._forward(packed, length)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    logits = self._forward(packed, length)
                self.graphs[(batch, length)] = (graph, logits)
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - start
        self.capture_bytes = max(0, free_before - torch.cuda.mem_get_info(self.device)[0])
        log.info("captured %d decode CUDA graphs (batch %s x context %s) in %.2f s, %.0f MiB",
                 len(self.graphs), list(self.buckets.batch_sizes), list(self.buckets.context_lens),
                 self.capture_s, self.capture_bytes / 2**20)
