"""Sizing the paged KV cache from the memory this device has left (or an explicit byte budget)."""
from __future__ import annotations

import torch

from sliceserve.model.arch import ArchConfig

# Share of currently available RAM the KV cache may take on CPU: the rest stays with the OS, the server
# and activations. Capped because an edge box shares memory with everything else it runs.
CPU_KV_FRACTION = 0.3
CPU_KV_CAP_BYTES = 4 << 30
# On CUDA, the share of free device memory after the weights are loaded (activations need the rest).
CUDA_KV_FRACTION = 0.8


def kv_bytes_per_block(arch: ArchConfig, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.tensor([], dtype=dtype).element_size()
    return 2 * arch.num_layers * block_size * arch.num_kv_heads * arch.head_dim * elem  # K and V


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot tell how much memory is available (no psutil, no /proc/meminfo)")


def size_kv_blocks(bytes_per_block: int, device: torch.device, kv_cache_memory_bytes: int | None = None) -> int:
    if kv_cache_memory_bytes is not None:
        budget = kv_cache_memory_bytes
        if budget < bytes_per_block:
            raise ValueError(f"kv_cache_memory_bytes {budget} is below one KV block ({bytes_per_block} bytes)")
    elif device.type == "cuda":
        budget = int(available_memory_bytes(device) * CUDA_KV_FRACTION)
    else:
        budget = min(int(available_memory_bytes(device) * CPU_KV_FRACTION), CPU_KV_CAP_BYTES)
    blocks = budget // bytes_per_block
    if blocks <= 0:
        raise ValueError(f"not enough memory for a KV cache: {budget} bytes, one block needs {bytes_per_block}")
    return int(blocks)
