from schedhelpers import make_request, scheduler, step
from sliceserve.request import RequestStatus


def test_chunked_prefill_under_the_token_budget():
    s = scheduler("vllm", max_num_batched_tokens=8, block_size=4, num_kv_blocks=16)
    s.add_request(make_request("a", 20, 3), 0.0)
    chunks = []
    for i in range(3):
        out, _ = step(s, 0.1 * i)
        chunks.append(out.prefill.get("a"))
        assert not out.decode
    assert chunks == [8, 8, 4]
    assert s.requests["a"].num_output_tokens == 1   # only the last chunk samples
    # A newcomer's prompt is chunked behind the running decode: 1 decode token + 7 prompt tokens.
    s.add_request(make_request("b", 12, 2), 0.3)
    out, _ = step(s, 0.3)
    assert out.decode == ["a"] and out.prefill == {"b": 7}
    out, _ = step(s, 0.4)
    assert out.decode == ["a"] and out.prefill == {"b": 5}


def test_recompute_preemption_of_the_newest_request():
    # 4 blocks of 4 tokens. Two 6-token prompts fill them once each grows past 8 tokens.
    s = scheduler("vllm", block_size=4, num_kv_blocks=4, max_num_batched_tokens=64)
    s.add_request(make_request("old", 6, 8), 0.0)
    s.add_request(make_request("new", 6, 8), 0.1)
    out, _ = step(s, 0.1)
    assert out.prefill == {"old": 6, "new": 6}
    step(s, 0.2)   # both decode: 7 tokens computed each, 2 blocks each
    step(s, 0.3)   # 8 computed each
    out, _ = step(s, 0.4)   # "old" needs a third block: "new" (newest) is preempted by recompute
    new = s.requests["new"]
    assert out.decode == ["old"] and out.preempted == ["new"] and new.status is RequestStatus.WAITING
    assert new.num_computed_tokens == 0 and new.num_output_tokens == 3 and new.num_preemptions == 1
    assert s.kv.num_blocks_held("new") == 0 and s.num_preemptions == 1
    # Nothing is lost: both finish with every token; "new" recomputes prompt + its 3 outputs.
    s2 = scheduler("vllm", block_size=4, num_kv_blocks=4, max_num_batched_tokens=64)
    a, b = make_request("old", 6, 8), make_request("new", 6, 8)
    s2.add_request(a, 0.0)
    s2.add_request(b, 0.1)
    preempted, recompute_chunks, now = [], [], 0.1
    while s2.has_unfinished():
        out, _ = step(s2, now)
        preempted += out.preempted
        if "new" in out.prefill and out.prefill["new"] > 6:
            recompute_chunks.append(out.prefill["new"])
        now += 0.1
        assert now < 10
    assert preempted == ["new"] and recompute_chunks == [9]
    assert a.num_output_tokens == b.num_output_tokens == 8


def test_priority_mode_orders_waiting_and_picks_the_victim():
    s = scheduler("vllm", vllm_mode="priority", max_num_seqs=1)
    s.add_request(make_request("low", 4, 2, priority=5), 0.0)
    s.add_request(make_request("high", 4, 2, priority=0), 0.1)
    out, _ = step(s, 0.1)
    assert list(out.prefill) == ["high"]
