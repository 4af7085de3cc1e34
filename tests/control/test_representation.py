"""Memory target -> representation: kept when it fits, int8 dynamic linears on CPU when it does not, and a
clear error when nothing fits. Resident memory is scripted so the decision is tested, not the machine."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sliceserve.control.representation import ACTIVATION_RESERVE_BYTES, fit_memory_target  # noqa: E402

MiB = 2**20


@pytest.fixture()
def net(tiny_llama_dir):
    from sliceserve.model.loader import load_model

    torch.set_num_threads(1)
    return load_model(str(tiny_llama_dir), num_threads=1, kv_cache_memory_bytes=1 << 20).runner.model


def test_fits_keeps_weights_and_gives_the_rest_to_kv(net):
    out, plan = fit_memory_target(net, torch.device("cpu"), 1000 * MiB, resident=lambda: 300 * MiB)
    assert out is net and plan.representation == "fp32"
    assert plan.kv_cache_bytes == 1000 * MiB - 300 * MiB - ACTIVATION_RESERVE_BYTES


def test_too_tight_quantises_linear_layers_to_int8(net):
    readings = iter([400 * MiB, 250 * MiB])           # before and after quantisation
    out, plan = fit_memory_target(net, torch.device("cpu"), 400 * MiB, resident=lambda: next(readings))
    assert plan.representation == "int8-dynamic" and plan.resident_bytes == 250 * MiB
    assert any("quantized" in type(m).__module__ for m in out.modules())
    assert out.lm_head.weight is out.model.embed_tokens.weight      # tied head left in fp32


def test_nothing_fits_says_what_to_do(net):
    with pytest.raises(ValueError, match="too small for this model.*raise the target"):
        fit_memory_target(net, torch.device("cpu"), 200 * MiB, resident=lambda: 190 * MiB)
    with pytest.raises(ValueError, match="positive"):
        fit_memory_target(net, torch.device("cpu"), 0)
