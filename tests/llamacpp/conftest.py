"""The llama.cpp backend's tests: skipped without llama-cpp-python (`make test-llamacpp` installs it)."""
from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.fixture(scope="session")
def gguf_path() -> str:
    from sliceserve.model.loader import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def lcpp(gguf_path):
    """The embedded SmolLM2-135M-Instruct Q4_1 on llama.cpp: one thread, 16 sequences of 512 cells."""
    from sliceserve.llamacpp.loader import load_llamacpp

    loaded = load_llamacpp(gguf_path, max_model_len=512, num_threads=1, max_num_seqs=16)
    yield loaded
    loaded.runner.close()


@pytest.fixture(scope="session")
def reference(gguf_path):
    """llama-cpp-python's own high-level model, with flash attention as the executor (native.py says why)."""
    ref = llama_cpp.Llama(gguf_path, n_ctx=1024, n_threads=1, n_threads_batch=1, flash_attn=True, verbose=False)
    yield ref
    ref.close()
