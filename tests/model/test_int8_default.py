"""The CPU default representation (int8 dynamic, per-channel weight scales) and the float32 reference path."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sliceserve.model.loader import load_model  # noqa: E402
from sliceserve.model.quant.int8_linear import FUSED_MAX_ROWS, Int8DynamicLinear  # noqa: E402
from sliceserve.model.quant.representation import INT8_DYNAMIC, keeps_fp32, resolve  # noqa: E402
from sliceserve.request import SamplingParams  # noqa: E402
from tests.model.helpers import run_engine  # noqa: E402

TEXTS = ["The quick brown fox jumps over", "Paris is the capital of", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def int8_loaded(tiny_llama_dir):
    torch.set_num_threads(1)
    return load_model(str(tiny_llama_dir), num_threads=1, kv_cache_memory_bytes=1 << 22)


def _quantised(net):
    from sliceserve.model.quant.int8_linear import Int8DynamicLinear

    return {n: m for n, m in net.named_modules() if isinstance(m, Int8DynamicLinear)}


def test_cpu_default_is_int8_per_channel_with_fp32_activations(int8_loaded):
    net = int8_loaded.runner.model
    assert int8_loaded.representation == INT8_DYNAMIC and int8_loaded.dtype == "float32"
    q = _quantised(net)
    # Every projection of every layer (fused q/k/v and gate/up) and the LM head; nothing left as a plain Linear.
    # Every projection of every layer (fused q/k/v and gate/up) and the LM head, but the first layers' down
    # projections, which stay fp32 (representation.FP32_DOWN_PROJ_LAYERS).
    per_layer = {"self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"}
    every = {f"model.layers.{i}.{p}" for i in range(len(net.model.layers)) for p in per_layer} | {"lm_head"}
    fp32 = {n for n in every if keeps_fp32(n)}
    assert fp32 == {f"model.layers.{i}.mlp.down_proj" for i in range(min(len(net.model.layers), 4))}
    assert set(q) == every - fp32
    assert {n for n, m in net.named_modules() if type(m) is torch.nn.Linear} == fp32
    assert all(m.weight().qscheme() == torch.per_channel_affine for m in q.values())
    assert int8_loaded.runner.kv_caches[0][0].dtype == torch.float32


def test_float32_is_the_unquantised_reference(tiny_llama_dir):
    ref = load_model(str(tiny_llama_dir), dtype="float32", num_threads=1, kv_cache_memory_bytes=1 << 22)
    assert ref.representation == "fp32" and not _quantised(ref.runner.model)


def test_int8_logits_stay_close_to_fp32(tiny_llama_dir, int8_loaded):
    """Per-channel int8 weights with int8 activations: logits within a few percent of fp32's range."""
    ref = load_model(str(tiny_llama_dir), dtype="float32", num_threads=1, kv_cache_memory_bytes=1 << 22)
    prompt = ref.tokenizer.encode(TEXTS[0])
    got = _last_logits(int8_loaded, prompt)
    want = _last_logits(ref, prompt)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() <= 0.05 * (want.max() - want.min())


def _last_logits(loaded, prompt):
    from sliceserve.model.quant.quality import window_logits

    return window_logits(loaded, prompt)[-1]


def test_each_token_gets_its_own_activation_scale():
    """A row with a huge activation next to an ordinary one: the ordinary row's output stays within int8
    rounding of fp32 (with one scale for the call it would round to almost nothing), and does not depend on
    its neighbour (exact integer products); the single-row kernel agrees within rounding."""
    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 64, generator=gen))
        lin.bias.copy_(torch.randn(32, generator=gen))
    q = Int8DynamicLinear(lin)
    normal = torch.randn(1, 64, generator=gen)
    huge = normal.clone()
    huge[0, 3] = 1000.0
    many = FUSED_MAX_ROWS + 1          # a prompt chunk: exact per-token integer path
    with torch.no_grad():
        want = lin(normal)
        together = q(torch.cat([huge.expand(many - 1, -1), normal]))[-1:]
        alike = q(normal.expand(many, -1))[-1:]
        small_batch = q(torch.cat([huge, normal]))[1:]   # a decode batch: fused kernel, rows rescaled
        alone = q(normal)
    assert (together - want).abs().max() <= 0.02 * want.abs().max()
    assert torch.equal(together, alike)
    assert (small_batch - want).abs().max() <= 0.03 * want.abs().max()
    assert (alone - want).abs().max() <= 0.03 * want.abs().max()
    lean = Int8DynamicLinear(lin, lean=True)   # memory targets: one int8 copy, every call per-token _int_mm
    with torch.no_grad():
        assert torch.equal(lean(normal), alike)


def test_int8_generation_is_deterministic(int8_loaded):
    prompts = [int8_loaded.tokenizer.encode(t) for t in TEXTS]
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    first, _ = run_engine(int8_loaded, prompts, params)
    again, _ = run_engine(int8_loaded, prompts, params)
    assert [r.output_token_ids for r in first] == [r.output_token_ids for r in again]
    assert all(len(r.output_token_ids) == 12 for r in first)
    vocab = int8_loaded.runner.vocab_size
    assert all(0 <= t < vocab for r in first for t in r.output_token_ids)


def test_dtype_choices_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve(None, cpu).name == INT8_DYNAMIC and resolve("auto", cpu).quantized
    assert resolve("int8", cpu).dtype == torch.float32
    assert resolve("float32", cpu).name == "fp32" and not resolve("float32", cpu).quantized
    assert resolve("bfloat16", cpu).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="CPU only"):
        resolve("int8", cuda)
    with pytest.raises(ValueError, match="unknown dtype 'int3'.*int8.*float32"):
        resolve("int3", cpu)


def test_profile_over_a_cache_of_nan_is_clean(int8_loaded):
    """Regression (issue 17): the start-up profile decodes synthetic contexts nothing wrote. When the cache's
    uninitialised memory read as NaN, int8's dynamic quantisation failed (`ChooseQuantizationParams: min <= max`,
    about one `--memory-limit 1GiB` start in five). A cache full of NaN must now profile cleanly and leave
    generation finite."""
    from sliceserve.model.profiler import quick_estimate

    for k, v in int8_loaded.runner.kv_caches:
        k.fill_(float("nan"))
        v.fill_(float("inf"))
    model = quick_estimate(int8_loaded, max_batch=4)
    assert model.decode_time(1) > 0 and model.prefill_time(32) > 0
    prompts = [int8_loaded.tokenizer.encode(t) for t in TEXTS]
    reqs, _ = run_engine(int8_loaded, prompts, SamplingParams(max_tokens=4, ignore_eos=True))
    assert all(len(r.output_token_ids) == 4 for r in reqs)


def test_both_integer_products_give_the_same_numbers(monkeypatch):
    """The prompt-chunk product runs `_int_mm` or an fp32 GEMM of the same int8 values, whichever is faster on
    the CPU (`integer_gemm`; on an AVX2-only EPYC `_int_mm` ran prompts ~40x slower than fp32): either way a
    chunk's output is the same, bit for bit."""
    from sliceserve.model.quant import int8_linear

    assert int8_linear.integer_gemm() in ("int_mm", "fp32")
    gen = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(576, 96, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(96, 576, generator=gen) * 0.05)
    q = Int8DynamicLinear(lin)
    chunk = torch.randn(FUSED_MAX_ROWS + 15, 576, generator=gen)
    chunk[3, 7] = 500.0   # a massive activation: its row's scale, not the others'
    outs = {}
    for choice in ("int_mm", "fp32"):
        monkeypatch.setattr(int8_linear, "integer_gemm", lambda c=choice: c)
        with torch.no_grad():
            outs[choice] = q(chunk)
    assert torch.equal(outs["int_mm"], outs["fp32"])
    with torch.no_grad():
        want = lin(chunk)
    assert (outs["fp32"][4:] - want[4:]).abs().max() <= 0.02 * want[4:].abs().max()
