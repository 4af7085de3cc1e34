"""The weights' representation: which form the torch engine computes in, chosen in one place.

`--dtype` (CLI, settings, `load_model(dtype=...)`) names it:
- `auto` (default): on CPU `int8`, on CUDA bf16 (fp16 where the GPU lacks bf16) with CUDA graphs.
- `int8` (CPU only): the decoder's Linears and the LM head hold int8 weights with one scale per output
  channel, and their inputs are quantised to int8 per token at run time (int8_linear.py: torch's quantised
  dynamic linear on the fbgemm/x86 engine, int8 GEMM on AVX2 / AVX-512 VNNI). The down projections of the
  first FP32_DOWN_PROJ_LAYERS layers, embedding, norms, rotary, attention and the KV cache stay fp32.
  Reported as `int8-dynamic`.
- `float32`: the exact reference path (token for token equal to transformers' fp32 `generate`).
- `bfloat16` / `float16`: the whole model in that type (on CPU bf16 is only ~1.2x fp32 here).

Why int8 dynamic is the CPU default (docs/results/cpu-representation.md, one thread, embedded SmolLM2-135M,
same run): 2.9x fp32's decode tokens/s at batch 1 and ~4x at batch 4, against bf16 at 1.2x / 1.3x and torch's
int4pack weight-only kernel at 0.2x / 0.1x; int8 weight-only (`_weight_int8pack_mm`) was slower than fp32.
Per-channel weight scales cost nothing in speed next to per-tensor ones. Rows of a multi-row call are
rescaled to a common range before the kernel's one activation scale is chosen, so it acts per token, but
its rounding still depends on the call: "batched == alone" holds exactly only on `float32`; a given batch is
deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

INT8_DYNAMIC = "int8-dynamic"
DTYPE_CHOICES = ("auto", "int8", "float32", "bfloat16", "float16")
_FLOATS = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# The MLP down projections of the first layers stay fp32: their inputs carry the model's outliers, and with
# them in int8 the embedded model's perplexity on the shipped prose rose 4.5 % over fp32 (2.1 % with these
# four in fp32, 3.4 % with two; every other Linear in int8). ~3 % of the decoder's weights.
FP32_DOWN_PROJ_LAYERS = 4


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
    from sliceserve.model.quant.int8_linear import Int8DynamicLinear

    return any(isinstance(m, Int8DynamicLinear) or type(m).__module__.startswith("torch.ao.nn.quantized")
               for m in net.modules())


def keeps_fp32(name: str) -> bool:
    """Linears left in fp32: the MLP down projections of the first FP32_DOWN_PROJ_LAYERS layers."""
    parts = name.split(".")
    return (len(parts) >= 5 and parts[:2] == ["model", "layers"] and parts[-2:] == ["mlp", "down_proj"]
            and parts[2].isdigit() and int(parts[2]) < FP32_DOWN_PROJ_LAYERS)


def quantize_int8_dynamic(net: nn.Module, skip: frozenset[str] = frozenset(), prefix: str = "",
                          lean: bool = False) -> nn.Module:
    """Every plain Linear of `net` (but the names in `skip` and those `keeps_fp32` names, `prefix` + name)
    -> Int8DynamicLinear: int8 weights with per-channel scales, inputs quantised per token. In place.
    `lean`: one weight copy, no fused single-row kernel (memory targets)."""
    from sliceserve.model.quant.int8_linear import Int8DynamicLinear

    engine = _int8_engine()
    if engine is None:
        raise ValueError("int8 needs torch's quantised CPU kernels, which this torch build lacks")
    torch.backends.quantized.engine = engine
    for parent_name, parent in list(net.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) is nn.Linear and name not in skip and not keeps_fp32(prefix + name):
                setattr(parent, child_name, Int8DynamicLinear(child, lean=lean))
    return net


def apply_representation(net: nn.Module, rep: Representation) -> nn.Module:
    """The loaded (fp) model in `rep`'s form; a model a memory target already streamed into int8 stays."""
    if rep.quantized and not is_int8(net):
        if hasattr(net, "fuse_projections"):
            net.fuse_projections()   # before quantising: a quantised Linear can no longer be stacked
        quantize_int8_dynamic(net)
    return net
