import pytest

from schedhelpers import make_request, scheduler, step
from sliceserve.core.latency import load_profile
from sliceserve.request import RequestStatus


def test_q0_defaults_to_one_decode_iteration_and_quanta_double():
    s = scheduler("fastserve", fastserve_num_queues=4)
    assert s.q0_s == pytest.approx(load_profile("paper-4060ti").decode_time(1))
    assert s.quanta_s[:3] == pytest.approx([s.q0_s, 2 * s.q0_s, 4 * s.q0_s]) and s.quanta_s[3] == float("inf")
    assert scheduler("fastserve", fastserve_q0_s=0.5).q0_s == 0.5


def test_skip_join_enters_the_first_queue_whose_quantum_covers_the_prefill():
    s = scheduler("fastserve", fastserve_q0_s=0.01)
    latency = load_profile("paper-4060ti")
    for rid, n in (("short", 1), ("mid", 100), ("long", 1000)):
        s.add_request(make_request(rid, n, 4), 0.0)
        level, need = s.level_of(rid), latency.prefill_time(n)
        assert s.quanta_s[level] >= need and (level == 0 or s.quanta_s[level - 1] < need)
    assert s.level_of("short") < s.level_of("mid") < s.level_of("long")


def test_long_running_request_is_demoted_and_a_newcomer_preempts_it():
    s = scheduler("fastserve", fastserve_q0_s=0.01, max_num_seqs=1)
    s.add_request(make_request("long", 1, 200), 0.0)
    start = s.level_of("long")
    levels, now = [], 0.0
    for _ in range(12):
        step(s, now, elapsed_s=0.01)
        now += 0.01
        levels.append(s.level_of("long"))
    # Each level holds it for quantum / 0.01 s iterations: 2**(p) iterations at level p (q0 = 0.01 s).
    expected, level, used = [], start, 0
    for _ in range(12):
        used += 1
        if used >= 2 ** level:
            level, used = level + 1, 0
        expected.append(level)
    assert levels == expected and levels[-1] > start and s.num_demotions == levels[-1] - start
    s.add_request(make_request("short", 1, 2), now)
    out, _ = step(s, now, elapsed_s=0.01)
    assert list(out.requests) == ["short"]
    assert s.requests["long"].status is RequestStatus.PAUSED and s.kv.num_blocks_held("long") > 0
    step(s, now + 0.01, elapsed_s=0.01)       # short finishes
    out, _ = step(s, now + 0.02, elapsed_s=0.01)
    assert out.decode == ["long"] and s.requests["long"].status is RequestStatus.RUNNING


def test_starvation_guard_returns_a_starved_request_to_the_top_queue():
    s = scheduler("fastserve", fastserve_q0_s=0.01, max_num_seqs=1, fastserve_starvation_s=1.0)
    s.add_request(make_request("long", 1, 500), 0.0)
    now = 0.0
    for _ in range(10):
        step(s, now, elapsed_s=0.01)
        now += 0.01
    assert s.level_of("long") > 0
    last_run = now
    # A stream of one-token newcomers at level 0 keeps the single slot busy: "long" starves.
    i, promoted_at = 0, None
    while now < last_run + 3.0:
        s.add_request(make_request(f"n{i}", 1, 1), now)
        i += 1
        out, _ = step(s, now, elapsed_s=0.05)
        if "long" in out.requests:
            promoted_at = now
            break
        now += 0.05
    assert s.num_starvation_promotions == 1
    assert promoted_at is not None and last_run + 1.0 <= promoted_at <= last_run + 1.2


def test_kv_holder_growth_preempts_the_lowest_priority_holder_by_recompute():
    # 5 blocks of 4 tokens. "a" (top priority) grows to 4 blocks while "b" and "c" hold one each, paused:
    # the lowest-priority holder, "c", is recomputed; "b" keeps its KV.
    s = scheduler("fastserve", fastserve_q0_s=10.0, max_num_seqs=3, block_size=4, num_kv_blocks=5)
    for rid, arrival in (("a", 0.0), ("b", 0.1), ("c", 0.2)):
        s.add_request(make_request(rid, 4, 12), arrival)
    step(s, 0.2)   # all three prefill with three slots
    assert all(s.kv.num_blocks_held(r) == 1 for r in "abc")
    s.config = s.config.with_overrides(max_num_seqs=1)
    preempted, now = [], 0.3
    while "a" in s.requests:
        out, _ = step(s, now)
        assert out.decode == ["a"]
        preempted += out.preempted
        now += 0.1
        assert now < 5
    assert preempted == ["c"]
    assert s.requests["c"].status is RequestStatus.WAITING and s.requests["c"].num_computed_tokens == 0
    assert s.requests["b"].status is RequestStatus.PAUSED and s.kv.num_blocks_held("b") == 1
