"""Memory target -> model representation and KV budget (`memory <= LIMIT` in the server's SLO).

Decided from measurement, not from a formula of parameter counts: after the weights are loaded the process's
resident memory is read; what is left under the limit, minus a reserve for activations and the server,
becomes the KV cache budget. When that leaves less than `min_kv_bytes`, the weights take a smaller form:
- CUDA: half precision (fp16), halving weight memory;
- CPU: int8 dynamic quantisation of the decoder's linear layers (the CPU default's form, model/quant/:
  per-channel int8 weights, activations quantised per call). A tied lm_head stays in fp32 here, because
  quantising it would add a copy next to the embedding it shares. With `--dtype float32` (the reference
  path) this is only chosen when the limit demands it, and reported; by default the weights are int8 already.
If even that does not fit, a ValueError says how much memory the limit lacks.

On CPU the int8 form is chosen *before* loading when the measured memory of the process so far plus the
checkpoint's fp32 size would not fit: `load_within_limit` then streams the weights into int8 layer by layer
(model/quant/int8_loader.py), because quantising an fp32 model after loading does not lower resident memory.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass

from sliceserve.model.quant.int8_loader import fp32_bytes, is_int8, load_int8, release_freed_heap, tensor_index
from sliceserve.resources import Monitor

ACTIVATION_RESERVE_BYTES = 96 << 20
# Peak resident memory while the fp32 loader runs, per byte of fp32 weights: the file's mapped pages and the
# fused q/k/v and gate/up copies coexist for a moment. Measured 1.56 on the embedded SmolLM2-135M (peak
# 1182 MiB = 380 MiB before loading + 1.56 x 513 MiB of weights); rounded up.
FP32_LOAD_PEAK_FACTOR = 1.6
MIN_KV_BYTES = 16 << 20


@dataclass(frozen=True)
class MemoryPlan:
    representation: str          # "fp32" / "bf16" / "fp16" as loaded, "fp16", or "int8-dynamic"
    kv_cache_bytes: int
    resident_bytes: int          # process memory after the weights took their final form
    limit_bytes: int


def process_resident_bytes() -> int:
    sample = Monitor().sample()
    if sample.process_rss_bytes is None:
        raise ValueError("a memory target needs the process's resident memory (psutil or /proc), which this "
                         "system does not expose; remove the memory target")
    return sample.process_rss_bytes


def _touch(net) -> None:
    """Page in every weight: safetensors tensors may be file-backed and lazily resident, so memory read
    before the first forward pass would undercount what generation will hold."""
    import torch

    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.sum()


def _quantize_cpu(net):
    from sliceserve.model.quant.representation import quantize_int8_dynamic

    tied = net.lm_head.weight is net.model.embed_tokens.weight
    return quantize_int8_dynamic(net, skip=frozenset({"lm_head"}) if tied else frozenset(), lean=True)


def load_within_limit(arch, model_dir, limit_bytes: int, kv_cache_bytes: int | None = None,
                      resident=None):
    """The model streamed into int8 when its fp32 weights would not fit under `limit_bytes` next to what the
    process holds now; None when fp32 fits (or the checkpoint cannot be streamed): load it as usual."""
    index = tensor_index(model_dir)
    if index is None:
        return None
    now = (resident or process_resident_bytes)()
    weights = fp32_bytes(index)
    # fp32 must fit both at its loading peak and afterwards, next to a KV cache and the activations.
    want = now + max(FP32_LOAD_PEAK_FACTOR * weights, weights + (kv_cache_bytes or MIN_KV_BYTES)
                     + ACTIVATION_RESERVE_BYTES)
    if want <= limit_bytes:
        return None
    net = load_int8(arch, model_dir)
    gc.collect()
    release_freed_heap()
    return net


def fit_memory_target(net, device, limit_bytes: int, kv_cache_bytes: int | None = None,
                      resident=None) -> tuple[object, MemoryPlan]:
    """Choose the weights' representation and the KV budget so the process stays under `limit_bytes`."""
    if limit_bytes <= 0:
        raise ValueError(f"memory target must be positive, got {limit_bytes}")
    dtype = str(next(net.parameters()).dtype).removeprefix("torch.")
    rep = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, dtype)
    if is_int8(net):   # already streamed into int8 (load_within_limit)
        rep = "int8-dynamic"
    want_kv = kv_cache_bytes or MIN_KV_BYTES
    resident = resident or process_resident_bytes   # looked up per call: tests script it
    if device.type == "cuda":
        import torch

        used = torch.cuda.memory_allocated(device)
        if used + want_kv + ACTIVATION_RESERVE_BYTES > limit_bytes and rep == "fp32":
            net, rep = net.half(), "fp16"
            used = torch.cuda.memory_allocated(device)
    else:
        _touch(net)
        used = resident()
        if used + want_kv + ACTIVATION_RESERVE_BYTES > limit_bytes and rep != "int8-dynamic":
            net, rep = _quantize_cpu(net), "int8-dynamic"
            gc.collect()
            release_freed_heap()
            _touch(net)
            used = resident()
    room = limit_bytes - used - ACTIVATION_RESERVE_BYTES
    if room < MIN_KV_BYTES:
        raise ValueError(f"memory target {limit_bytes / 2**20:.0f} MiB is too small for this model: the "
                         f"{rep} weights and runtime take {used / 2**20:.0f} MiB, plus "
                         f"{(ACTIVATION_RESERVE_BYTES + MIN_KV_BYTES) / 2**20:.0f} MiB for activations and a "
                         "minimal KV cache; raise the target or use a smaller model")
    kv = min(room, kv_cache_bytes) if kv_cache_bytes else room
    return net, MemoryPlan(rep, int(kv), int(used), int(limit_bytes))
