from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    from sliceserve.model.loader import load_model

    return load_model(str(tiny_llama_dir), dtype="float32", kv_cache_memory_bytes=1 << 22)  # the reference path
