"""The executor on hand-made SchedulerOutputs: it runs exactly what it is given, nothing more."""
from __future__ import annotations

from sliceserve.core.outputs import SchedulerOutput
from sliceserve.request import Request, SamplingParams

PROMPT_A = [1, 504, 3458, 282, 4649, 314, 253, 2330, 30, 378]
PROMPT_B = [1, 19556, 905, 28, 638, 359, 346, 47]


def _req(rid: str, prompt: list[int]) -> Request:
    return Request(rid, list(prompt), SamplingParams(max_tokens=64, ignore_eos=True), arrival_s=0.0)


def _step(ex, reqs, prefill=None, decode=(), preempted=(), finished=()):
    """One iteration, then the scheduler's part done by hand: advance computed tokens, append samples."""
    prefill = prefill or {}
    out = ex.execute(SchedulerOutput(prefill=dict(prefill), decode=list(decode), preempted=list(preempted),
                                     finished=list(finished), requests={r.req_id: r for r in reqs}))
    assert not out.errors, out.errors
    for r in reqs:
        if r.req_id in prefill:
            r.num_computed_tokens += prefill[r.req_id]
        elif r.req_id in decode:
            r.num_computed_tokens = r.num_tokens
        if r.req_id in out.sampled:
            r.output_token_ids.append(out.sampled[r.req_id])
    return out


def _alone(ex, prompt, n) -> list[int]:
    r = _req("alone", prompt)
    _step(ex, [r], prefill={"alone": len(prompt)})
    while len(r.output_token_ids) < n:
        _step(ex, [r], decode=["alone"])
    _step(ex, [], finished=["alone"])
    return r.output_token_ids


def test_left_out_request_gains_no_token(lcpp):
    ex = lcpp.runner
    want_a, want_b = _alone(ex, PROMPT_A, 8), _alone(ex, PROMPT_B, 8)
    a, b = _req("a", PROMPT_A), _req("b", PROMPT_B)
    _step(ex, [a, b], prefill={"a": 4})                       # a: first chunk, b: not scheduled
    out = _step(ex, [a, b], prefill={"a": 6, "b": len(PROMPT_B)})
    assert set(out.sampled) == {"a", "b"}
    for i in range(10):
        chosen = ["a"] if i % 3 else ["a", "b"]               # b sits out two of every three iterations
        before = len(b.output_token_ids)
        out = _step(ex, [a, b], decode=chosen)
        assert set(out.sampled) == set(chosen)
        if "b" not in chosen:
            assert len(b.output_token_ids) == before and ex.seqs.length["b"] == b.num_computed_tokens
    assert a.output_token_ids[:8] == want_a and b.output_token_ids[:5] == want_b[:5]
    _step(ex, [], finished=["a", "b"])
    assert "a" not in ex.seqs and "b" not in ex.seqs


def test_preempted_sequence_is_removed_and_recomputed(lcpp):
    ex = lcpp.runner
    want = _alone(ex, PROMPT_A, 10)
    a = _req("p", PROMPT_A)
    _step(ex, [a], prefill={"p": len(PROMPT_A)})
    for _ in range(4):
        _step(ex, [a], decode=["p"])
    seq = ex.seqs.seq_id("p")
    assert ex.native.pos_max(seq) == a.num_computed_tokens - 1
    a.num_computed_tokens = 0                                 # what the scheduler does on preemption
    ex.execute(SchedulerOutput(preempted=["p"]))
    assert "p" not in ex.seqs and ex.native.pos_max(seq) == -1
    # Resume: the scheduler re-feeds prompt and output so far as prefill chunks (here 7 + the rest).
    _step(ex, [a], prefill={"p": 7})
    _step(ex, [a], prefill={"p": a.num_tokens - 7})
    while len(a.output_token_ids) < 10:
        _step(ex, [a], decode=["p"])
    assert a.output_token_ids == want
    _step(ex, [], finished=["p"])


def test_errors_name_the_problem_and_fail_only_that_request(lcpp):
    ex = lcpp.runner
    good, skip, bad = _req("g", PROMPT_A), _req("s", PROMPT_B), _req("x", [1, 10**7])
    skip.num_computed_tokens = 3                              # claims KV llama.cpp never computed
    out = ex.execute(SchedulerOutput(prefill={"g": len(PROMPT_A), "s": 2, "x": 2},
                                     requests={"g": good, "s": skip, "x": bad}))
    assert set(out.sampled) == {"g"}
    assert "outside the vocabulary" in out.errors["x"]
    assert "prefix caching is not supported" in out.errors["s"]
    ex.execute(SchedulerOutput(finished=["g", "s", "x"]))
    assert not any(rid in ex.seqs for rid in "gsx")


def test_sequence_ids_run_out_at_n_seq_max_and_come_back(lcpp):
    ex = lcpp.runner
    n = ex.native.n_seq_max - len(ex.seqs)
    reqs = [_req(f"q{i}", PROMPT_B[:2]) for i in range(n + 1)]
    out = ex.execute(SchedulerOutput(prefill={r.req_id: 2 for r in reqs}, requests={r.req_id: r for r in reqs}))
    assert len(out.sampled) == n and list(out.errors) == [f"q{n}"]
    assert "sequences are in use" in out.errors[f"q{n}"]
    ex.execute(SchedulerOutput(finished=[r.req_id for r in reqs]))
    again = _req("again", PROMPT_B)
    out = ex.execute(SchedulerOutput(prefill={"again": len(PROMPT_B)}, requests={"again": again}))
    assert "again" in out.sampled and not out.errors
    ex.execute(SchedulerOutput(finished=["again"]))
