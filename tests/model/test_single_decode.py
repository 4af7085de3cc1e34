"""The lone-sequence decode pass (sliceserve.model.single_decode) computes exactly what the general pass does."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sliceserve.core.outputs import SchedulerOutput  # noqa: E402
from sliceserve.model.attention import AttentionMetadata, DecodeGroup  # noqa: E402
from sliceserve.model.loader import load_model  # noqa: E402
from sliceserve.request import Request, SamplingParams  # noqa: E402

REPRESENTATIONS = ["float32", "int8"]
FIXTURES = ["tiny_llama_dir", "tiny_qwen2_dir"]   # Qwen2: q/k/v biases, an untied head


def _loaded(request, fixture: str, dtype: str):
    return load_model(str(request.getfixturevalue(fixture)), dtype=dtype, num_threads=1,
                      kv_cache_memory_bytes=1 << 22)


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("dtype", REPRESENTATIONS)
def test_same_logits_and_cache_as_the_general_pass(request, fixture, dtype):
    loaded = _loaded(request, fixture, dtype)
    runner = loaded.runner
    assert runner.single_decode is not None
    torch.manual_seed(0)
    for k, v in runner.kv_caches:   # a context of arbitrary values, starting mid-cache
        k.normal_()
        v.normal_()
    start, length = 3 * loaded.block_size, 2 * loaded.block_size + 5
    slots = torch.arange(start, start + length)[None]
    meta = AttentionMetadata(slot_mapping=slots[0, -1:], prefills=[],
                             decode_groups=[DecodeGroup(torch.tensor([0]), slots, None)])
    with torch.inference_mode():
        general = runner.model(torch.tensor([7]), torch.tensor([length - 1]), runner.kv_caches, meta,
                               torch.tensor([0]))
        cache_general = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
        for k, v in runner.kv_caches:   # the new token's slot, rewritten by the pass under test
            k.view(-1, *k.shape[2:])[start + length - 1] = 0
            v.view(-1, *v.shape[2:])[start + length - 1] = 0
        single = runner.single_decode.run(7, length - 1, start)
    assert torch.equal(single, general)
    for (k1, v1), (k2, v2) in zip(cache_general, runner.kv_caches):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    with torch.inference_mode():   # the same context named slot by slot (the scattered-blocks form)
        gathered = runner.single_decode.run(7, length - 1, slots[0])
    assert torch.equal(gathered, general)
    # int8 without biases runs in TorchScript (quant/scripted_step.py); its Python pass must agree as well.
    scripted = runner.single_decode.scripted
    assert (scripted is not None) == (dtype == "int8" and fixture == "tiny_llama_dir")
    if scripted is not None:
        runner.single_decode.scripted = None
        try:
            with torch.inference_mode():
                python = [runner.single_decode.run(7, length - 1, c) for c in (start, slots[0])]
        finally:
            runner.single_decode.scripted = scripted
        assert all(torch.equal(p, general) for p in python)


def _greedy(runner, block_size: int, table: list[int], steps: int) -> tuple[list[int], int]:
    """Greedy tokens of one request through runner.execute, and how many steps took the single pass."""
    req = Request("a", [5, 9, 17, 3, 11, 2, 8], SamplingParams(max_tokens=steps + 1, ignore_eos=True), arrival_s=0.0)
    reqs, tables = {"a": req}, {"a": table}
    out = runner.execute(SchedulerOutput(prefill={"a": req.num_prompt_tokens}, requests=reqs, block_tables=tables))
    req.num_computed_tokens = req.num_prompt_tokens
    req.output_token_ids.append(out.sampled["a"])
    taken = 0
    single = runner.single_decode
    real = single.run if single is not None else None

    def counting(*args):
        nonlocal taken
        taken += 1
        return real(*args)

    if single is not None:
        single.run = counting
    try:
        for _ in range(steps):
            out = runner.execute(SchedulerOutput(decode=["a"], requests=reqs, block_tables=tables))
            req.num_computed_tokens += 1
            req.output_token_ids.append(out.sampled["a"])
    finally:
        if single is not None:
            del single.run   # back to the class's method
    runner.execute(SchedulerOutput(finished=["a"]))
    return req.output_token_ids, taken


@pytest.mark.parametrize("dtype", REPRESENTATIONS)
def test_runner_takes_it_for_every_lone_decode(request, dtype):
    loaded = _loaded(request, "tiny_llama_dir", dtype)
    runner, bs = loaded.runner, loaded.block_size
    steps = 2 * bs   # crosses block boundaries
    blocks = -(-(7 + steps + 1) // bs)
    contiguous, taken = _greedy(runner, bs, list(range(2, 2 + blocks)), steps)
    assert taken == steps
    scattered, taken = _greedy(runner, bs, list(range(2 * blocks + 1, 1, -2))[:blocks], steps)
    assert taken == steps   # blocks out of order: the context is gathered
    saved, runner.single_decode = runner.single_decode, None
    try:
        general, _ = _greedy(runner, bs, list(range(2, 2 + blocks)), steps)
    finally:
        runner.single_decode = saved
    assert contiguous == scattered == general


def test_scripted_int8_down_projection(request, monkeypatch):
    """With only layer 0's down projection kept fp32, layer 1's runs through the scripted int8 branch."""
    import sliceserve.model.quant.representation as representation

    monkeypatch.setattr(representation, "FP32_DOWN_PROJ_LAYERS", 1)
    loaded = _loaded(request, "tiny_llama_dir", "int8")
    runner = loaded.runner
    assert runner.single_decode.scripted is not None
    assert type(runner.model.model.layers[1].mlp.down_proj) is not torch.nn.Linear
    contiguous, taken = _greedy(runner, loaded.block_size, list(range(2, 6)), 20)
    assert taken == 20
    runner.single_decode = None
    general, _ = _greedy(runner, loaded.block_size, list(range(2, 6)), 20)
    assert contiguous == general


@pytest.mark.parametrize("overhead", [None, 0.0])   # the runner's grouping; 0: one attention group per sequence
@pytest.mark.parametrize("lengths", [(9, 9, 9, 9), (3, 30, 17, 8, 40)])
def test_scripted_batch_matches_the_general_pass(request, lengths, overhead):
    """int8 decode-only steps of several sequences (equal contexts; unequal ones, padded and masked or split
    into groups) give the general pass's logits and cache, bit for bit."""
    loaded = _loaded(request, "tiny_llama_dir", "int8")
    runner, bs = loaded.runner, loaded.block_size
    if overhead is not None:
        runner.decode_group_overhead_tokens = overhead
    assert runner.single_decode.scripted is not None
    per = -(-(max(lengths) + 2) // bs)
    reqs, tables = {}, {}
    for i, n in enumerate(lengths):
        rid = f"s{i}"
        reqs[rid] = Request(rid, [(7 * i + j) % 50 + 1 for j in range(n)], SamplingParams(max_tokens=4, ignore_eos=True),
                            arrival_s=0.0)
        tables[rid] = list(range(1 + i * per, 1 + (i + 1) * per))[::-1 if i % 2 else 1]   # some out of order
    out = runner.execute(SchedulerOutput(prefill={r: len(q.prompt_token_ids) for r, q in reqs.items()}, requests=reqs,
                                         block_tables=tables))
    for rid, req in reqs.items():
        req.num_computed_tokens = req.num_prompt_tokens
        req.output_token_ids.append(out.sampled[rid])
    sched = SchedulerOutput(decode=list(reqs), requests=reqs, block_tables=tables)
    feeds = list(sched.feeds())
    before = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
    fast, _, _ = runner._forward(feeds, sched, {})
    after_fast = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
    for (k, v), (k0, v0) in zip(runner.kv_caches, before):
        k.copy_(k0)
        v.copy_(v0)
    saved, runner.single_decode = runner.single_decode, None
    try:
        general, _, _ = runner._forward(feeds, sched, {})
    finally:
        runner.single_decode = saved
    assert fast.shape == (len(lengths), runner.vocab_size)
    assert torch.equal(fast, general)
    same = lambda a, b: torch.equal(a.view(torch.int32), b.view(torch.int32))  # noqa: E731 - bits: unwritten slots may hold NaN
    assert all(same(a, k) and same(b, v) for (a, b), (k, v) in zip(after_fast, runner.kv_caches))
