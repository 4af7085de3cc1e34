"""A Linear with int8 weights (one scale per output channel) and int8 activations quantised per token.

torch.ao's `quantize_dynamic` quantises a call's whole input with ONE scale. Over a prompt chunk that scale
is set by the largest activation of any token, and a few tokens carry activations hundreds of times the rest
("massive activations", Sun et al. 2024, arXiv 2402.17762): the embedded SmolLM2-135M's perplexity on the
shipped prose went from 20.5 (fp32) to 53.8 that way. Here every row (token) gets its own symmetric scale,
max |x| / 127, as LLM.int8() (Dettmers et al. 2022, arXiv 2208.07339) and SmoothQuant quantise activations:
- a call of more than FUSED_MAX_ROWS rows (a prompt chunk) quantises each row, multiplies int8 x int8 ->
  int32 with `torch._int_mm` (oneDNN, VNNI where the CPU has it) and rescales by row scale x channel scale. The
  integer product is exact, so a row's output does not depend on the other rows.
- a single row (a batch-1 decode step, where the call's scale is the row's own anyway) runs torch's fused
  dynamic kernel (`quantized::linear_dynamic`, fbgemm), which measured ~2.5x faster than the op sequence
  above at one row (fewer ops per call; 7-bit asymmetric activations, fbgemm's overflow-safe default).
- 2..FUSED_MAX_ROWS rows (a batched decode step) run the fused kernel too, each row first divided by its own
  max |x| and its output row multiplied back (exact for a Linear without bias: W (x / r) r = W x), so the
  call's one scale covers rows of equal range -- per token up to the kernel's rounding. At batch 4 the
  `_int_mm` sequence cost about 2x this (docs/results/cpu-representation.md); its 7-bit steps are what the
  single-row kernel gives each row anyway. Prompt chunks longer than that keep the exact per-token path:
  quality is decided there (perplexity +8.9 % with every call rescaled this way, +2.1 % as it is).
Both hold the same int8 weights: the plain [in, out] copy for `_int_mm` and fbgemm's packed one. Under a memory
target (`lean=True`) only the plain copy is kept and single rows take the prompt chunks' product too (slower,
~107 MiB less on the embedded model).

`_int_mm` is fast only where oneDNN has an int8 GEMM for the CPU: on an AMD EPYC VM with AVX2 and no AVX-512,
a 256 x 576 x 1536 product took 341 ms against 5.7 ms for the same product in fp32, and the int8 default ran
prompts ~60x slower than fp32. So the integer product is taken once per process from whichever of the two is
faster here (`integer_gemm`, measured at first use): `_int_mm`, or an fp32 GEMM of the same int8 values. The
fp32 GEMM is exact while its partial sums stay under 2^24 (a row of 1,536 products of int8 values would need
most of them near 127 x 127 and of one sign to exceed it), so both give the same numbers. It widens the weight
to fp32 a block of columns at a time (`_FP32_BLOCK_BYTES`). The choice also serves a lean layer's single rows.
"""
from __future__ import annotations

import functools
import logging
import time
import warnings
from typing import Callable

import torch
from torch import nn

_PER_CHANNEL_ENGINES = ("x86", "fbgemm", "onednn")
# Largest call (rows) that takes the fused kernel: decode batches up to this size, longer prompt chunks not.
FUSED_MAX_ROWS = 16


log = logging.getLogger(__name__)


@functools.cache
def integer_gemm() -> str:
    """`int_mm` or `fp32`: which computes an int8 x int8 product faster on this CPU, at this process's torch
    thread count (each timed three times on a prompt-chunk shape of the embedded model; the fastest of each)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (64, 576), dtype=torch.int8, generator=gen)
    w = torch.randint(-127, 128, (576, 1536), dtype=torch.int8, generator=gen)

    def best_of_3(f: Callable[[], torch.Tensor]) -> float:
        f()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    int_mm = best_of_3(lambda: torch._int_mm(x, w))
    fp32 = best_of_3(lambda: x.float() @ w.float())
    choice = "int_mm" if int_mm <= fp32 else "fp32"
    log.info("int8 prompt-chunk product: %s (64 x 576 x 1536: _int_mm %.2f ms, fp32 GEMM %.2f ms; cpu %s)",
             choice, int_mm * 1e3, fp32 * 1e3, torch.backends.cpu.get_cpu_capability())
    return choice


# The fp32 product widens the weight a block of output columns at a time, so the temporary stays near this
# many bytes whatever the layer's size (an 8B model's MLP matrix whole would be ~235 MB); the embedded model's
# layers fit one block (split in 512 columns, a 256-row chunk took 9 % longer).
_FP32_BLOCK_BYTES = 8 << 20


def int_product(xq: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """xq [rows, in] (int8 values, as int8) x w_t [in, out] int8: the integer product as fp32."""
    if integer_gemm() == "int_mm":
        return torch._int_mm(xq, w_t).float()
    x = xq.float()
    block = max(256, _FP32_BLOCK_BYTES // (4 * w_t.shape[0]))
    if w_t.shape[1] <= block:
        return x @ w_t.float()
    return torch.cat([x @ w_t[:, j:j + block].float() for j in range(0, w_t.shape[1], block)], dim=1)


class _FusedCall(nn.Module):
    """The fused-kernel rows of Int8DynamicLinear.forward, run by TorchScript: there the packed weight is
    already an IValue, while each call from Python paid ~12 us converting it (a C++ exception thrown and
    caught per call; scripted_step.py). The same operators in the same order: bit-identical."""

    def __init__(self, packed) -> None:
        super().__init__()
        self.packed = packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)
        r = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12)
        return torch.ops.quantized.linear_dynamic(x / r, self.packed, True).mul_(r)


def _scripted_call(packed) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch.jit.script is deprecated in 2.13; it still works
            return torch.jit.script(_FusedCall(packed))
    except Exception:  # noqa: BLE001 - no TorchScript here: the Python calls below run
        return None


class Int8DynamicLinear(nn.Module):
    def __init__(self, linear: nn.Linear, lean: bool = False) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("w_t", q.t().contiguous())     # [in, out] int8 for torch._int_mm
        self.register_buffer("w_scale", scale)                # [out] fp32
        self._packed = None if lean else self._prepack(w, q, scale)
        integer_gemm()   # measured once per process, here at load rather than inside the first prompt's iteration
        # Kept out of the module tree (no submodule, nothing in state_dict): a way to call the kernel.
        object.__setattr__(self, "_fused", None if self._packed is None else _scripted_call(self._packed))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    @staticmethod
    def _prepack(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # quantised tensors are deprecated in torch; they still work in 2.13
            if torch.backends.quantized.engine in _PER_CHANNEL_ENGINES:
                zero = torch.zeros_like(scale, dtype=torch.long)
                qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
            else:   # e.g. qnnpack: one weight scale for the single-row kernel
                qw = torch.quantize_per_tensor(w, float(scale.max()), 0, torch.qint8)
            return torch.ops.quantized.linear_prepack(qw, None)

    def weight(self) -> torch.Tensor:
        """The quantised weight as a qint8 tensor with per-channel scales."""
        if self._packed is not None:
            return torch.ops.quantized.linear_unpack(self._packed)[0]
        zero = torch.zeros_like(self.w_scale, dtype=torch.long)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch._make_per_channel_quantized_tensor(self.w_t.t().contiguous(), self.w_scale.double(), zero, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        rows = x.shape[0]
        if rows <= FUSED_MAX_ROWS and self._fused is not None:
            y = self._fused(x)
        elif rows == 1 and self._packed is not None:
            y = torch.ops.quantized.linear_dynamic(x, self._packed, True)
        elif rows <= FUSED_MAX_ROWS and self._packed is not None:
            r = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12)
            y = torch.ops.quantized.linear_dynamic(x / r, self._packed, True).mul_(r)
        else:
            s = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12).div_(127.0)
            xq = torch.round(x / s).to(torch.int8)
            y = int_product(xq, self.w_t).mul_(s).mul_(self.w_scale)
        return y if self.bias is None else y.add_(self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-token dynamic"
