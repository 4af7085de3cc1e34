from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_loaded_factory(tiny_llama_dir):
    """Fresh LoadedModel per call (each server owns its runner and KV), on the shared tiny Llama dir."""
    import torch

    from sliceserve.model.loader import load_model

    torch.set_num_threads(1)

    def make(**kw):
        kw.setdefault("kv_cache_memory_bytes", 4 << 20)
        # The exact reference path: several server tests compare a request's text alone and in a batch, which
        # the int8 CPU default matches only to within rounding (tests/model covers int8).
        kw.setdefault("dtype", "float32")
        kw.setdefault("max_model_len", 512)
        return load_model(str(tiny_llama_dir), num_threads=1, **kw)

    return make
