"""`--backend torch|llamacpp`: one function that loads a model for either executor.

Both return a `LoadedModel` (sliceserve/executor_api.py, the seam), so everything downstream (build_engine, LLM,
bench, server, profile) is backend-blind. Neither backend is imported until chosen: torch and llama_cpp are
optional extras.
"""
from __future__ import annotations

from sliceserve.executor_api import LoadedModel

BACKENDS = ("torch", "llamacpp")


def load_backend(backend: str = "torch", model: str | None = None, *, device: str = "cpu", dtype: str | None = None,
                 kv_cache_memory_bytes: int | None = None, block_size: int = 16, max_model_len: int | None = None,
                 num_threads: int | None = None, seed: int = 0, memory_limit_bytes: int | None = None,
                 max_num_seqs: int | None = None, cuda_graphs: bool = True) -> LoadedModel:
    """`cuda_graphs`: torch on CUDA only, decode steps as CUDA graphs (sliceserve.model.cuda_graphs)."""
    if backend == "torch":
        from sliceserve.model.loader import CUDA_GRAPH_MAX_BATCH, load_model

        return load_model(model, device=device, dtype=dtype, kv_cache_memory_bytes=kv_cache_memory_bytes,
                          block_size=block_size, max_model_len=max_model_len, num_threads=num_threads, seed=seed,
                          memory_limit_bytes=memory_limit_bytes, cuda_graphs=cuda_graphs,
                          cuda_graph_max_batch=max(CUDA_GRAPH_MAX_BATCH, max_num_seqs or 0))
    if backend != "llamacpp":
        raise ValueError(f"unknown backend {backend!r} (choose {' or '.join(BACKENDS)})")
    if device != "cpu":
        raise ValueError(f"the llamacpp backend runs on the CPU here, got device {device!r}")
    if dtype not in (None, "auto"):
        raise ValueError(f"the llamacpp backend computes in the GGUF's own types; drop dtype {dtype!r}")
    if memory_limit_bytes is not None:
        raise ValueError("a memory limit chooses torch weight representations; with the llamacpp backend give "
                         "kv_cache_memory_bytes instead")
    from sliceserve.config import SchedulerConfig
    from sliceserve.llamacpp.loader import load_llamacpp

    return load_llamacpp(model, kv_cache_memory_bytes=kv_cache_memory_bytes, block_size=block_size,
                         max_model_len=max_model_len, num_threads=num_threads, seed=seed,
                         max_num_seqs=max_num_seqs or SchedulerConfig.max_num_seqs)

