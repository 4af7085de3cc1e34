import pytest

from schedhelpers import TOKEN, make_request, scheduler, step
from sliceserve.request import FinishReason, RequestStatus


def test_rejections_say_why():
    s = scheduler("vllm", num_kv_blocks=4, block_size=4, max_model_len=64, max_waiting=1)
    empty = make_request("empty", 0, 4)
    assert not s.add_request(empty, 0.0)
    assert empty.finish_reason is FinishReason.REJECTED and "empty" in empty.error
    too_long = make_request("long", 60, 10)
    assert not s.add_request(too_long, 0.0) and "max_model_len" in too_long.error
    too_big = make_request("big", 10, 10)   # 20 tokens > 4 blocks x 4
    assert not s.add_request(too_big, 0.0) and "KV blocks" in too_big.error
    assert s.add_request(make_request("ok", 4, 2), 0.0)
    full = make_request("full", 4, 2)
    assert not s.add_request(full, 0.0) and "queue is full" in full.error
    assert set(s.requests) == {"ok"}


def test_duplicate_id_is_a_value_error():
    s = scheduler("vllm")
    s.add_request(make_request("a", 4, 2), 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        s.add_request(make_request("a", 4, 2), 0.0)


def test_abort_frees_kv_and_is_reported_to_the_executor():
    s = scheduler("vllm", block_size=4)
    s.add_request(make_request("a", 10, 5), 0.0)
    out, _ = step(s, 0.0)
    assert out.prefill == {"a": 10} and s.kv.num_blocks_held("a") == 3
    req = s.abort("a", 0.2)
    assert req.status is RequestStatus.FINISHED and req.finish_reason is FinishReason.ABORT
    assert s.kv.num_used_blocks == 0 and not s.has_unfinished()
    assert s.abort("a", 0.3) is None
    assert s.schedule(0.3).finished == ["a"]


def test_stop_token_stop_string_eos_and_length():
    s = scheduler("vllm")
    s.add_request(make_request("len", 3, 2), 0.0)
    s.add_request(make_request("tok", 3, 9, stop_token_ids=(TOKEN,)), 0.0)
    eos = make_request("eos", 3, 9)
    eos.eos_token_id = TOKEN
    s.add_request(eos, 0.0)
    ign = make_request("ign", 3, 3, ignore_eos=True)
    ign.eos_token_id = TOKEN
    s.add_request(ign, 0.0)
    s.add_request(make_request("str", 3, 9), 0.0)
    _, ended = step(s, 0.0, stopped={"str"})
    reasons = {r.req_id: r.finish_reason for r in ended}
    assert reasons == {"tok": FinishReason.STOP, "eos": FinishReason.STOP, "str": FinishReason.STOP}
    _, ended = step(s, 0.1)
    assert [(r.req_id, r.finish_reason) for r in ended] == [("len", FinishReason.LENGTH)]
    _, ended = step(s, 0.2)
    assert [(r.req_id, r.finish_reason, r.num_output_tokens) for r in ended] == [("ign", FinishReason.LENGTH, 3)]


def test_executor_errors_fail_only_their_requests():
    from sliceserve.core.outputs import ModelOutput
    s = scheduler("vllm")
    s.add_request(make_request("a", 3, 4), 0.0)
    s.add_request(make_request("b", 3, 4), 0.0)
    out = s.schedule(0.0)
    ended = s.update(out, ModelOutput(sampled={"b": 1}, elapsed_s=0.1, errors={"a": "boom"}), 0.1)
    assert [(r.req_id, r.finish_reason, r.error) for r in ended] == [("a", FinishReason.ERROR, "boom")]
    assert s.requests["b"].num_output_tokens == 1 and s.kv.num_blocks_held("a") == 0


def test_token_timestamps_and_block_tables():
    s = scheduler("vllm", block_size=4)
    s.add_request(make_request("a", 5, 3), 0.0)
    out, _ = step(s, 1.0, elapsed_s=0.5)
    assert list(out.block_tables) == ["a"] and len(out.block_tables["a"]) == 2
    with pytest.raises(KeyError):
        out.block_tables["zzz"]
    step(s, 1.5, elapsed_s=0.5)
    req = s.requests["a"]
    assert req.token_times_s == [1.5, 2.0] and req.first_scheduled_s == 1.0


def test_latency_model_sees_the_context_each_decode_attended(monkeypatch):
    # Before: the scheduler fed the decode EWMA the context after update() had advanced it (one too high),
    # unlike the wall-clock driver, the controller and the simulator.
    sched = scheduler("vllm")
    seen = []
    monkeypatch.setattr(type(sched.latency), "observe", lambda self, sample: seen.append(sample))
    sched.add_request(make_request("a", 10, 5), 0.0)
    sched.add_request(make_request("b", 20, 5), 0.0)
    step(sched, 0.0)                      # both prompts in one iteration
    seen.clear()
    step(sched, 1.0)                      # both decode the token after their prompt
    (sample,) = seen
    assert sample.num_decode == 2 and sample.prefill_tokens == 0
    assert sample.decode_ctx == (10 + 20) / 2


def test_waiting_without_sets_a_request_aside_and_restores_its_place():
    s = scheduler("vllm")
    reqs = [make_request(rid, 8, 2) for rid in "abc"]
    for r in reqs:
        assert s.add_request(r, 0.0)
    with pytest.raises(RuntimeError):
        with s.waiting_without(reqs[1]):
            assert [r.req_id for r in s.waiting] == ["a", "c"]
            raise RuntimeError("the admit hook failed")
    assert s.waiting == reqs and reqs[1].req_id in s.requests
