"""The weights' representation: which form the torch engine computes in, chosen in one place.

`--dtype` (CLI, settings, `load_model(dtype=...)`) names it:
- `auto` (default): on CPU `int8`, on CUDA bf16 (fp16 where the GPU lacks bf16) with CUDA graphs.
- `int8` (CPU only): every Linear of the decoder and the LM head holds int8 weights with one scale per output
  channel, and its input is quantised to int8 per call at run time (torch.ao dynamic quantisation on the
  fbgemm/x86 engine, whose int8 GEMM uses AVX2/AVX-512 VNNI). Embedding, norms, rotary, attention and the KV
  cache stay fp32. Reported as `int8-dynamic`.
- `float32`: the exact reference path (token for token equal to transformers' fp32 `generate`).
- `bfloat16` / `float16`: the whole model in that type (on CPU bf16 is only ~1.2x fp32 here).

Why int8 dynamic is the CPU default (docs/results/cpu-representation.md, one thread, embedded SmolLM2-135M,
same run): 2.9x fp32's decode tokens/s at batch 1 and ~4x at batch 4, against bf16 at 1.2x / 1.3x and torch's
int4pack weight-only kernel at 0.2x / 0.1x. Per-channel weight scales cost nothing in speed next to
per-tensor ones and keep each output row's own range. The activation scale is one per call (per tensor): a
sequence's logits can move in the last bits with what else is in its batch, so "batched == alone" holds only
on `float32`; a given batch is deterministic.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

INT8_DYNAMIC = "int8-dynamic"
DTYPE_CHOICES = ("auto", "int8", "float32", "bfloat16", "float16")
_FLOATS = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# Quantised engines whose dynamic Linear takes per-output-channel weight scales.
_PER_CHANNEL_ENGINES = ("x86", "fbgemm", "onednn")


@dataclass(frozen=True)
class Representation:
    name: str             # what /v1/status and profiles report: fp32, bf16, fp16 or int8-dynamic
    dtype: torch.dtype    # activations, KV cache and the weights left unquantised (embedding, norms)

    @property
    def quantized(self) -> bool:
        return self.name == INT8_DYNAMIC


def _int8_engine() -> str | None:
    """The quantised engine to run int8 on (None: this torch build has none)."""
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if not engines:
        return None
    current = torch.backends.quantized.engine
    return current if current in engines else engines[0]


def resolve(dtype: str | None, device: torch.device) -> Representation:
    """The representation `dtype` names on `device` (None / "auto": the device's fast default)."""
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return Representation("bf16", torch.bfloat16) if torch.cuda.is_bf16_supported() \
                else Representation("fp16", torch.float16)
        if _int8_engine() is None:   # no quantised kernels in this build: the fp32 reference
            return Representation("fp32", torch.float32)
        return Representation(INT8_DYNAMIC, torch.float32)
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError("dtype int8 (dynamic int8 linear layers) runs on the CPU only; on CUDA use "
                             "float16 or bfloat16")
        if _int8_engine() is None:
            raise ValueError("dtype int8 needs torch's quantised CPU kernels, which this torch build lacks; "
                             "use float32")
        return Representation(INT8_DYNAMIC, torch.float32)
    if dtype not in _FLOATS:
        raise ValueError(f"unknown dtype {dtype!r} (choose {', '.join(DTYPE_CHOICES)})")
    return Representation(_NAMES[_FLOATS[dtype]], _FLOATS[dtype])


def is_int8(net: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in net.modules())


def quantize_int8_dynamic(net: nn.Module, skip: frozenset[str] = frozenset()) -> nn.Module:
    """Every plain Linear of `net` (but the names in `skip`) -> int8 weights, one scale per output channel
    where the engine supports it (per tensor elsewhere), inputs quantised per call. In place."""
    engine = _int8_engine()
    if engine is None:
        raise ValueError("int8 needs torch's quantised CPU kernels, which this torch build lacks")
    torch.backends.quantized.engine = engine
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if engine in _PER_CHANNEL_ENGINES else default_dynamic_qconfig
    names = {n: qconfig for n, m in net.named_modules() if type(m) is nn.Linear and n not in skip}
    if not names:
        return net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.ao's deprecation notices: the API still works in this torch
        return torch.ao.quantization.quantize_dynamic(net, names, dtype=torch.qint8, inplace=True)


def apply_representation(net: nn.Module, rep: Representation) -> nn.Module:
    """The loaded (fp) model in `rep`'s form; a model a memory target already streamed into int8 stays."""
    if rep.quantized and not is_int8(net):
        if hasattr(net, "fuse_projections"):
            net.fuse_projections()   # before quantising: a quantised Linear can no longer be stacked
        quantize_int8_dynamic(net)
    return net
