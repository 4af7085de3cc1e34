"""Load a Llama-family checkpoint straight into int8 dynamic-quantised linear layers, one decoder layer at a
time, so the fp32 weights are never all resident.

Why not quantise after loading: quantising a loaded fp32 model keeps its fp32 weights in the process while the
int8 copies are made, and what glibc and the file mapping keep afterwards left resident memory *higher* than
fp32 (1033 vs ~918 MiB on the embedded SmolLM2-135M, docs/CONTROL.md). Here each tensor is read with plain
file reads (no mmap, so no file pages stay mapped into the process), one layer's fp32 weights exist at a
time, and they are freed as soon as that layer is quantised.

Only safetensors checkpoints are streamed (their header gives every tensor's offset); for anything else
`load_int8` returns None and the caller loads fp32 as usual. Embeddings, norms and an untied lm_head stay in
full precision, except a tied embedding / lm_head pair (SmolLM2's 49152 x 576 table is 108 MiB in fp32, a
third of the model): it becomes one int8 table with a scale per row (symmetric, max |w| / 127), looked up row
by row for the embedding and multiplied in vocabulary chunks for the logits, so no fp32 copy of the whole
table ever exists (a dynamic-quantised lm_head would need a second, packed copy next to the lookup table).
"""
from __future__ import annotations

import gc
import json
import struct
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from sliceserve.model.quant.representation import is_int8, quantize_int8_dynamic  # noqa: F401

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _header(path: Path) -> tuple[dict, int]:
    """(tensor name -> {dtype, shape, data_offsets}, offset of the data section)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def tensor_index(model_dir: Path) -> dict[str, tuple[Path, dict, int]] | None:
    """name -> (file, entry, data start) over the directory's safetensors files; None if it has none."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    index: dict[str, tuple[Path, dict, int]] = {}
    for path in files:
        header, start = _header(path)
        for name, entry in header.items():
            if entry["dtype"] not in _DTYPES:
                return None   # integer / fp8 checkpoints: not this loader's business
            index[name] = (path, entry, start)
    return index


def fp32_bytes(index: dict[str, tuple[Path, dict, int]]) -> int:
    """What the weights would take as fp32 (the reference form, before any quantisation)."""
    total = 0
    for _, entry, _ in index.values():
        n = 1
        for d in entry["shape"]:
            n *= d
        total += 4 * n
    return total


def _read(index: dict[str, tuple[Path, dict, int]], names: list[str], dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(index[name][0], []).append(name)
    for path, group in by_file.items():
        with open(path, "rb", buffering=0) as f:
            for name in group:
                _, entry, start = index[name]
                lo, hi = entry["data_offsets"]
                buf = bytearray(hi - lo)
                f.seek(start + lo)
                f.readinto(buf)
                t = torch.frombuffer(buf, dtype=_DTYPES[entry["dtype"]]).reshape(entry["shape"])
                yield name, (t.to(dtype) if t.dtype != dtype else t)


def _quantise(module: nn.Module, prefix: str) -> None:
    # The same form as the CPU default (representation.py): per-channel weight scales, per-token activations.
    quantize_int8_dynamic(module, prefix=prefix, lean=True)   # memory first: one int8 copy


def load_int8(arch, model_dir: Path) -> nn.Module | None:
    """The model with int8 dynamic linear layers in its decoder, fp32 elsewhere; None when the checkpoint
    cannot be streamed (not safetensors). Raises ValueError when the weights do not match `arch`."""
    from sliceserve.model.llama import LlamaForCausalLM

    index = tensor_index(model_dir)
    if index is None:
        return None
    with torch.device("meta"):
        net = LlamaForCausalLM(arch)
    expected = {k for k in net.state_dict() if not (arch.tie_word_embeddings and k == "lm_head.weight")}
    present = {k for k in index if not k.endswith("rotary_emb.inv_freq")}
    if arch.tie_word_embeddings:
        present.discard("lm_head.weight")
    if expected != present:
        raise ValueError(f"{model_dir}: weights do not match the {arch.model_type} config (missing "
                         f"{sorted(expected - present)[:3]}, unexpected {sorted(present - expected)[:3]})")
    layer_prefix = "model.layers."
    rest = sorted(k for k in expected if not k.startswith(layer_prefix))
    tied = arch.tie_word_embeddings and "model.embed_tokens.weight" in rest
    if tied:
        rest.remove("model.embed_tokens.weight")
        (_, emb), = _read(index, ["model.embed_tokens.weight"], torch.float32)
        _tie_int8(net, emb)
        del emb
        gc.collect()
        release_freed_heap()
    net.load_state_dict(dict(_read(index, rest, torch.float32)), strict=False, assign=True)
    for i, layer in enumerate(net.model.layers):
        prefix = f"{layer_prefix}{i}."
        names = sorted(k for k in expected if k.startswith(prefix))
        layer.load_state_dict({k[len(prefix):]: t for k, t in _read(index, names, torch.float32)}, assign=True)
        # Fuse before quantising when the model supports it: fused projections are the engine's fast path,
        # and a quantised Linear can no longer be stacked.
        for part in (layer.self_attn, layer.mlp):
            if hasattr(part, "fuse"):
                part.fuse()
        _quantise(layer, prefix)
        gc.collect()
        release_freed_heap()   # this layer's fp32 buffers, before the next layer's are read
    _check_materialised(net)
    return net.eval()


_HEAD_CHUNK_ROWS = 4096   # vocabulary rows dequantised at a time for the logits: ~9 MiB of fp32 at d=576


class Int8Table(nn.Module):
    """A [vocab, d] table as int8 rows and one fp32 scale per row, shared by the embedding and the head."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        q = torch.empty(weight.shape, dtype=torch.int8)
        scale = torch.empty(weight.shape[0], dtype=torch.float32)
        # Chunk by chunk: quantising the whole table at once would hold two more fp32 copies at the peak.
        for lo in range(0, weight.shape[0], _HEAD_CHUNK_ROWS):
            w = weight[lo:lo + _HEAD_CHUNK_ROWS].float()
            s = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            q[lo:lo + len(w)] = torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8)
            scale[lo:lo + len(w)] = s
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)


class Int8Embedding(nn.Module):
    def __init__(self, table: Int8Table) -> None:
        super().__init__()
        self.table = table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.table
        return t.q.index_select(0, ids).float() * t.scale.index_select(0, ids)[:, None]


class Int8Head(nn.Module):
    """Logits x @ W^T with W = q * scale (per row): (x @ q^T) * scale, q dequantised chunk by chunk."""

    def __init__(self, table: Int8Table) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = self.table.q, self.table.scale
        x = x.float()
        out = torch.empty(x.shape[0], q.shape[0], dtype=torch.float32, device=x.device)
        for lo in range(0, q.shape[0], _HEAD_CHUNK_ROWS):
            hi = min(lo + _HEAD_CHUNK_ROWS, q.shape[0])
            torch.matmul(x, q[lo:hi].float().t(), out=out[:, lo:hi])
        return out.mul_(scale)


def _tie_int8(net: nn.Module, weight: torch.Tensor) -> None:
    table = Int8Table(weight)
    net.model.embed_tokens = Int8Embedding(table)
    net.lm_head = Int8Head(table)


def release_freed_heap() -> None:
    """Hand freed weights back to the OS: glibc keeps freed blocks under its mmap threshold in the heap,
    where they still count as resident."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to trim
            pass


def _check_materialised(net: nn.Module) -> None:
    """Every parameter and buffer must have come from the checkpoint (none left on the meta device)."""
    left = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"weights missing from the checkpoint: {left[:3]}")


