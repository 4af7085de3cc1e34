from schedhelpers import make_request, scheduler, step
from sliceserve.request import RequestStatus


def test_reserves_the_worst_case_at_admission_and_prefills_whole():
    s = scheduler("orca", block_size=4, num_kv_blocks=64, max_num_batched_tokens=8)
    s.add_request(make_request("a", 30, 10), 0.0)
    out, _ = step(s, 0.0)
    assert out.prefill == {"a": 30}        # whole prompt, past the token budget: Orca does not chunk
    assert s.kv.num_blocks_held("a") == 10  # (30 + 10) / 4: prompt plus max_tokens, reserved up front
    for i in range(3):
        out, _ = step(s, 0.1 * (i + 1))
        assert out.decode == ["a"] and s.kv.num_blocks_held("a") == 10


def test_strict_fcfs_admission_blocks_younger_requests():
    s = scheduler("orca", block_size=4, num_kv_blocks=10)
    s.add_request(make_request("a", 16, 8), 0.0)    # 6 blocks
    s.add_request(make_request("b", 12, 8), 0.1)    # 5 blocks: does not fit next to a
    s.add_request(make_request("c", 2, 2), 0.2)     # 1 block: would fit, but may not overtake b
    out, _ = step(s, 0.2)
    assert list(out.prefill) == ["a"]
    assert s.requests["b"].status is RequestStatus.WAITING and s.requests["c"].status is RequestStatus.WAITING
    now = 0.3
    while "a" in s.requests:
        out, _ = step(s, now)
        assert set(out.requests) == {"a"}
        now += 0.1
    out, _ = step(s, now)
    assert list(out.prefill) == ["b", "c"]


def test_every_running_request_decodes_every_iteration_and_none_is_preempted():
    s = scheduler("orca", block_size=4, num_kv_blocks=24, max_num_seqs=3)
    for i in range(6):
        s.add_request(make_request(f"r{i}", 5 + i, 6 + i), 0.05 * i)
    now = 0.3
    while s.has_unfinished():
        running = [r.req_id for r in s.running]
        out, _ = step(s, now)
        assert not out.preempted and len(s.running) <= 3
        assert [rid for rid in running] == [rid for rid in out.requests if rid in running]
        now += 0.1
        assert now < 50
    assert s.num_preemptions == 0
