"""Memory target -> representation: kept when it fits, int8 dynamic linears on CPU when it does not, and a
clear error when nothing fits. Resident memory is scripted so the decision is tested, not the machine."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sliceserve.model.quant.memory_target import ACTIVATION_RESERVE_BYTES, fit_memory_target  # noqa: E402

MiB = 2**20


@pytest.fixture()
def net(tiny_llama_dir):
    from sliceserve.model.loader import load_model

    torch.set_num_threads(1)
    return load_model(str(tiny_llama_dir), dtype="float32", num_threads=1, kv_cache_memory_bytes=1 << 20).runner.model


def test_fits_keeps_weights_and_gives_the_rest_to_kv(net):
    out, plan = fit_memory_target(net, torch.device("cpu"), 1000 * MiB, resident=lambda: 300 * MiB)
    assert out is net and plan.representation == "fp32"
    assert plan.kv_cache_bytes == 1000 * MiB - 300 * MiB - ACTIVATION_RESERVE_BYTES


def test_too_tight_quantises_linear_layers_to_int8(net):
    readings = iter([400 * MiB, 250 * MiB])           # before and after quantisation
    out, plan = fit_memory_target(net, torch.device("cpu"), 400 * MiB, resident=lambda: next(readings))
    assert plan.representation == "int8-dynamic" and plan.resident_bytes == 250 * MiB
    from sliceserve.model.quant.representation import is_int8

    assert is_int8(out)
    assert out.lm_head.weight is out.model.embed_tokens.weight      # tied head left in fp32


def test_nothing_fits_says_what_to_do(net):
    with pytest.raises(ValueError, match="too small for this model.*raise the target"):
        fit_memory_target(net, torch.device("cpu"), 200 * MiB, resident=lambda: 190 * MiB)
    with pytest.raises(ValueError, match="positive"):
        fit_memory_target(net, torch.device("cpu"), 0)


def _int8_linears(net):
    from sliceserve.model.quant.int8_linear import Int8DynamicLinear

    return {n: m for n, m in net.named_modules() if isinstance(m, Int8DynamicLinear)}


def test_streamed_int8_equals_quantising_after_load(tiny_llama_dir, monkeypatch):
    """Loading layer by layer into int8 gives exactly the decoder weights, and the greedy tokens, of quantising
    the loaded fp32 model (with the same int8 tied embedding table), without holding all fp32 weights."""
    import copy

    from sliceserve.model.quant import memory_target
    from sliceserve.model.quant.int8_loader import Int8Head, _tie_int8
    from sliceserve.model.quant.memory_target import _quantize_cpu
    from sliceserve.engine.llm import LLM
    from sliceserve.model.loader import load_model
    from sliceserve.request import SamplingParams

    torch.set_num_threads(1)
    fp32 = load_model(str(tiny_llama_dir), dtype="float32", num_threads=1, kv_cache_memory_bytes=1 << 20,
                      max_model_len=256)
    emb = fp32.runner.model.model.embed_tokens.weight.detach().clone()
    reference = _quantize_cpu(copy.deepcopy(fp32.runner.model))
    _tie_int8(reference, emb)
    # Scripted resident memory: 390 MiB before loading (fp32 would not fit under 500 MiB next to a KV cache and
    # the activation reserve, so the weights are streamed as int8), 300 MiB once they are loaded.
    readings = iter([390 * MiB])
    monkeypatch.setattr(memory_target, "process_resident_bytes", lambda: next(readings, 300 * MiB))
    streamed = load_model(str(tiny_llama_dir), num_threads=1, memory_limit_bytes=500 * MiB, max_model_len=256)
    assert streamed.representation == "int8-dynamic"
    ours, theirs = _int8_linears(streamed.runner.model), _int8_linears(reference)
    # every decoder linear of the 2 layers but their down projections (fp32: representation.keeps_fp32)
    assert ours.keys() == theirs.keys() and len(ours) == 2 * 3
    for name, m in ours.items():
        a, b = m.weight(), theirs[name].weight()
        assert a.qscheme() == torch.per_channel_affine, name     # one scale per output row (model/quant/)
        assert m._packed is None, name                           # memory first: one int8 copy
        assert torch.equal(a.int_repr(), b.int_repr()), name
        assert torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales()), name
    # The tied head: one int8 table for lookup and logits, within int8 rounding of the fp32 product.
    head = streamed.runner.model.lm_head
    assert isinstance(head, Int8Head) and head.table is streamed.runner.model.model.embed_tokens.table
    x = torch.randn(3, emb.shape[1], generator=torch.Generator().manual_seed(0))
    exact = x @ emb.t()
    assert (head(x) - exact).abs().max() <= 0.02 * exact.abs().max()
    prompts, sp = ["hello there", "one two three four"], SamplingParams(max_tokens=8, ignore_eos=True)
    fp32.runner.model = reference
    want = [o.token_ids for o in LLM(fp32, policy="vllm", profile="paper-4060ti").generate(prompts, sp)]
    got = [o.token_ids for o in LLM(streamed, policy="vllm", profile="paper-4060ti").generate(prompts, sp)]
    assert got == want and all(len(t) == 8 for t in got)


def test_streaming_skipped_when_fp32_fits(tiny_llama_dir):
    from sliceserve.model.quant.memory_target import load_within_limit
    from sliceserve.model.arch import parse_arch
    from sliceserve.model.weights import read_config

    arch = parse_arch(read_config(tiny_llama_dir), "config.json")
    assert load_within_limit(arch, tiny_llama_dir, 4000 * MiB, resident=lambda: 300 * MiB) is None
    net = load_within_limit(arch, tiny_llama_dir, 320 * MiB, resident=lambda: 300 * MiB)
    assert net is not None and _int8_linears(net)
