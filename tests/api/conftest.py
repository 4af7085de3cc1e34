"""A live server on the embedded SmolLM2-135M-Instruct (its real tokenizer and weights: grammar masks,
tool calls and logprobs are judged on the model users get), shared by the module's tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_loaded():
    torch = pytest.importorskip("torch")
    from sliceserve.model.loader import default_model_path

    try:
        default_model_path()
    except ValueError as exc:
        pytest.skip(str(exc))
    from sliceserve.engine.backend import load_backend

    torch.set_num_threads(1)
    # The exact float32 path: these tests compare a prompt alone and batched, which int8 matches only to rounding.
    return load_backend("torch", dtype="float32", kv_cache_memory_bytes=96 << 20, max_model_len=1024, num_threads=1)


@pytest.fixture(scope="module")
def server(embedded_loaded):
    from tests.server.helpers import LiveServer, make_state

    with LiveServer(make_state(embedded_loaded, served_model_name="smol", max_num_seqs=32)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    import openai

    # 20 constrained requests share each decode step on 2 CPUs: minutes, not the helper's 60 s.
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)
