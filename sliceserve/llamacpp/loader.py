"""load_llamacpp(): a GGUF file opened by llama.cpp, with a tokenizer and the executor, ready for EngineCore.

It returns the engine's `LoadedModel` (backend "llamacpp", no prefix-cache sharing, a fixed number of
sequence ids), so build_engine, LLM, the bench and the server take it unchanged. The KV geometry handed to the scheduler is exactly llama.cpp's context:
num_kv_blocks * block_size == n_ctx == n_seq_max * n_ctx_seq, max_model_len <= n_ctx_seq (each sequence has
its own stream of cells, native.py says why) and the scheduler's max_num_seqs <= n_seq_max. Within those
limits no iteration the scheduler admits can run out of llama.cpp cells.
"""
from __future__ import annotations

import math
from pathlib import Path

from sliceserve.executor_api import LoadedModel
from sliceserve.llamacpp.executor import LlamaCppExecutor
from sliceserve.llamacpp.native import ContextShape, NativeContext
from sliceserve.llamacpp.profiling import SyntheticContextExecutor

# Cells per sequence without max_model_len or a KV budget: edge-mix prompts + outputs reach ~2.5k tokens at
# the tail, 2048 holds nearly all. llama.cpp allocates every stream up front (23 KiB per cell for SmolLM2-135M:
# 8 sequences x 2048 = 360 MiB).
DEFAULT_SEQ_TOKENS = 2048
LLAMA_MAX_SEQ = 256          # llama.cpp's compile-time limit on sequence ids
_CTX_ALIGN = 256             # llama.cpp pads a context to a multiple of 256 cells; stay on that grid


def _gguf_path(model: str | None) -> Path:
    if model is None:
        from sliceserve.model.loader import default_model_path

        model = default_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(f"{path}: model path does not exist")
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise ValueError(f"{path}: the llamacpp backend needs a .gguf file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (bad magic bytes)")
    return path


def _seq_tokens(native: NativeContext, kv_cache_memory_bytes: int | None, max_model_len: int | None,
                block_size: int, n_seq: int) -> int:
    """Cells of each sequence's stream: from the KV budget shared by n_seq streams, else max_model_len, else
    the default; on llama.cpp's 256-cell grid and a whole number of scheduler blocks."""
    align = math.lcm(_CTX_ALIGN, block_size)
    if kv_cache_memory_bytes is not None:
        if kv_cache_memory_bytes <= 0:
            raise ValueError(f"kv_cache_memory_bytes must be positive, got {kv_cache_memory_bytes}")
        tokens = kv_cache_memory_bytes // native.kv_bytes_per_token() // n_seq // align * align
        if tokens <= 0:
            raise ValueError(f"a KV cache of {kv_cache_memory_bytes} bytes gives {n_seq} sequences fewer than "
                             f"{align} tokens each ({native.kv_bytes_per_token()} bytes per token)")
        return tokens
    wanted = max_model_len or min(DEFAULT_SEQ_TOKENS, native.n_ctx_train)
    return -(-wanted // align) * align


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    from sliceserve.model.cache import gguf_tokenizer_dir

    try:
        return AutoTokenizer.from_pretrained(str(gguf_tokenizer_dir(path)))
    except Exception as exc:
        raise ValueError(f"{path}: cannot load tokenizer ({type(exc).__name__}: {exc})") from None


def _eos_ids(tokenizer) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else []


def load_llamacpp(model: str | None = None, *, kv_cache_memory_bytes: int | None = None, block_size: int = 16,
                  max_model_len: int | None = None, num_threads: int | None = None, max_num_seqs: int = 16,
                  n_batch: int = 512, seed: int = 0, flash_attn: bool = True) -> LoadedModel:
    """Open a GGUF file (None: the embedded SmolLM2-135M-Instruct) with llama.cpp on the CPU."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    threads = 1 if num_threads is None else num_threads   # as the torch backend: one thread is safe here
    if threads <= 0:
        raise ValueError(f"num_threads must be positive, got {threads}")
    if not 0 < max_num_seqs <= LLAMA_MAX_SEQ:
        raise ValueError(f"max_num_seqs must be in 1..{LLAMA_MAX_SEQ} for llama.cpp, got {max_num_seqs}")
    path = _gguf_path(model)
    native = NativeContext(path)
    if max_model_len is not None and not 0 < max_model_len <= native.n_ctx_train:
        raise ValueError(f"max_model_len must be in 1..{native.n_ctx_train} for {path.name}, got {max_model_len}")
    per_seq = _seq_tokens(native, kv_cache_memory_bytes, max_model_len, block_size, max_num_seqs)
    n_ctx = per_seq * max_num_seqs
    native.open(ContextShape(n_ctx, max_num_seqs, n_batch, threads, flash_attn))
    if native.n_ctx != n_ctx or native.n_ctx_seq != per_seq or native.n_seq_max < max_num_seqs:
        raise ValueError(f"{path}: llama.cpp opened {native.n_ctx} cells / {native.n_ctx_seq} per sequence / "
                         f"{native.n_seq_max} sequences, asked for {n_ctx} / {per_seq} / {max_num_seqs}")
    tokenizer = _tokenizer(path)
    return LoadedModel(
        runner=LlamaCppExecutor(native, tokenizer, seed), tokenizer=tokenizer, eos_token_ids=_eos_ids(tokenizer),
        num_kv_blocks=n_ctx // block_size, block_size=block_size,
        max_model_len=min(max_model_len or per_seq, per_seq, native.n_ctx_train), model_name=path.stem,
        device="cpu", dtype="gguf", backend="llamacpp", max_num_seqs=max_num_seqs,
        enable_prefix_caching=False,   # llama.cpp holds only what it computed (executor.py)
        profiling_view=SyntheticContextExecutor)
