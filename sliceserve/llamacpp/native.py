"""The llama.cpp handles one executor owns: model, context (unified KV memory) and one reusable batch.

Thin on purpose: every policy decision (which tokens, which sequences) stays in the executor; this file only
speaks llama-cpp-python's low-level C API and turns its failures into messages naming the file.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# llama.cpp logs every tensor it loads to stderr; one no-op callback (kept alive here, C holds a raw pointer).
_SILENT_LOG = None


def import_llama_cpp():
    """llama_cpp, or a one-line ValueError saying how to install it (the backend is an optional extra)."""
    global _SILENT_LOG
    try:
        import llama_cpp
    except ImportError as exc:
        raise ValueError(f"the llamacpp backend needs llama-cpp-python: pip install 'sliceserve[llamacpp]' "
                         f"({exc})") from None
    if _SILENT_LOG is None:
        _SILENT_LOG = llama_cpp.llama_log_callback(lambda level, text, user: None)
        llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p())
        llama_cpp.llama_backend_init()
    return llama_cpp


@dataclass(frozen=True)
class ContextShape:
    n_ctx: int          # KV cells in all: the scheduler's whole KV capacity
    n_seq_max: int      # distinct sequence ids llama.cpp accepts
    n_batch: int        # most tokens one llama_decode call takes
    n_threads: int
    # Flash attention skips masked cells, so a query's sum runs over its own sequence's cells only, in cell
    # order: chunked and unchunked prefill then give bit-identical logits (without it, up to 0.6 apart).
    flash_attn: bool = True
    # One KV stream per sequence (n_ctx / n_seq_max cells each) instead of one shared pool: a sequence's
    # cells then always ascend with its positions. In a shared pool a sequence refills holes left by
    # finished ones, the f16 attention sums run in another order, and logits moved by up to 0.8 (measured),
    # enough to change greedy tokens; the per-sequence streams cost the same at batch 1 (14.2 vs 14.3 ms).
    unified: bool = False


class NativeContext:
    """Load the model now (file errors surface here), open the context with `open(shape)` once its size is known."""

    def __init__(self, path: str | Path) -> None:
        self.lib = lib = import_llama_cpp()
        self.path = Path(path)
        self._ctx = None
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), lib.llama_model_default_params())
        if not self._model:
            raise ValueError(f"{self.path}: llama.cpp cannot load this GGUF file (corrupt, truncated or an "
                             f"unsupported architecture)")
        self.n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))

    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V (f16, llama.cpp's default cache type) one token takes across all layers."""
        lib, m = self.lib, self._model
        head_dim = lib.llama_model_n_embd(m) // lib.llama_model_n_head(m)
        return 2 * lib.llama_model_n_layer(m) * lib.llama_model_n_head_kv(m) * head_dim * 2

    def open(self, shape: ContextShape) -> None:
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_seq_max = shape.n_ctx, shape.n_seq_max
        params.n_batch = params.n_ubatch = shape.n_batch
        params.n_threads = params.n_threads_batch = shape.n_threads
        params.kv_unified = shape.unified
        params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if shape.flash_attn
                                  else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ValueError(f"{self.path}: llama.cpp cannot create a context of {shape.n_ctx} tokens and "
                             f"{shape.n_seq_max} sequences")
        self.n_ctx = lib.llama_n_ctx(self._ctx)
        self.n_seq_max = lib.llama_n_seq_max(self._ctx)
        self.n_ctx_seq = lib.llama_n_ctx_seq(self._ctx)   # cells one sequence may use
        self.n_batch = shape.n_batch
        self.n_threads = shape.n_threads
        self._memory = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(shape.n_batch, 0, 1)

    def remove(self, seq_id: int) -> None:
        """Forget every cell of a sequence (whole-sequence removal never fails)."""
        self.lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def copy_sequence(self, src: int, dst: int) -> None:
        """Give `dst` a copy of every cell of `src` (across streams llama.cpp copies the cells)."""
        self.lib.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    def pos_max(self, seq_id: int) -> int:
        """Largest position a sequence holds, -1 when it holds none."""
        return self.lib.llama_memory_seq_pos_max(self._memory, seq_id)

    def decode(self, tokens: list[int], positions: list[int], seq_ids: list[int], outputs: list[int]) -> list[np.ndarray]:
        """One llama_decode of at most n_batch tokens; a copy of the logits of each row index in `outputs`."""
        b, n = self._batch, len(tokens)
        assert 0 < n <= self.n_batch
        token, pos, n_seq, seq, want = b.token, b.pos, b.n_seq_id, b.seq_id, b.logits
        for i in range(n):
            token[i] = tokens[i]
            pos[i] = positions[i]
            n_seq[i] = 1
            seq[i][0] = seq_ids[i]
            want[i] = 0
        for i in outputs:
            want[i] = 1
        b.n_tokens = n
        rc = self.lib.llama_decode(self._ctx, b)
        if rc != 0:
            why = {1: "no free KV cells for the batch", 2: "aborted", -1: "invalid input batch"}.get(rc, "fatal error")
            raise RuntimeError(f"llama_decode returned {rc} ({why})")
        # Copies: llama.cpp reuses its logits buffer on the next decode.
        return [np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,)).copy()
                for i in outputs]

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self.lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
