"""`slice_drop_lost`: what SLICE does with admitted requests whose SLO it counts as lost (a stream whose
TPOT is beyond catching up, a prompt whose TTFT passed): refuse them (`reject`), keep them behind every
request that can still make it (`relegate`), set them aside until the device has nothing else to do (`park`),
refuse only the hopeless ones and park the rest (`hopeless`, the server's `overload: reject`), or serve them best
effort (`off`). CPU only."""
from __future__ import annotations

from sliceserve.core.outputs import ModelOutput
from sliceserve.core.slice.lost import hopeless_reason
from sliceserve.engine.door import late_requests
from sliceserve.request import FinishReason, RequestStatus, SamplingParams
from sliceserve.slo import SLO
from tests.slice.conftest import make_req, make_slice


def _first_token(sched, req, now: float = 0.0) -> float:
    """Run `req` alone until its first token; returns the time."""
    sched.add_request(req, now)
    while not req.output_token_ids:
        out = sched.schedule(now)
        sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
        now += 0.02
        sched.update(out, ModelOutput(sampled=sampled, elapsed_s=0.02), now)
    return now


def _stalled_stream(paper, mode: str, stall_s: float):
    """An nrt-100 stream (100 tokens, 0.1 s TPOT) that got its first token, then nothing for `stall_s`
    seconds (e.g. displaced by real-time streams); a fresh request then arrives and triggers a rebuild."""
    sched = make_slice(paper.copy(), slice_drop_lost=mode)
    stream = make_req("stream", prompt=32, max_tokens=100, ttft=1.0, tpot=0.1, utility=1.0, cls="nrt-100")
    now = _first_token(sched, stream) + stall_s
    fresh = make_req("fresh", arrival=now, prompt=32, max_tokens=20, ttft=1.0, tpot=0.1, utility=1.0, cls="nrt-100")
    sched.add_request(fresh, now)
    out = sched.schedule(now)
    return sched, stream, fresh, out, now


def test_a_stream_beyond_catching_up_is_refused_mid_stream(paper):
    # 99 tokens left; after a 6 s stall they are due within 3.9 s: 26 steps per 1 s cycle, more than twice
    # the stream's demand (10, `slice_catchup_factor` 2), so the selection counts it lost.
    sched, stream, fresh, out, now = _stalled_stream(paper, "reject", 6.0)
    assert "stream" not in out.requests and "fresh" in out.requests
    ended = sched.update(out, ModelOutput(sampled={}, elapsed_s=0.02), now + 0.02)
    assert stream in ended and stream.finish_reason is FinishReason.REJECTED
    assert stream.num_output_tokens == 1 and "SLO can no longer be met" in stream.error
    assert sched.num_rejected == 1 and sched.kv.num_blocks_held("stream") == 0


def test_a_stream_that_can_still_catch_up_is_kept(paper):
    # After a 2 s stall, 99 tokens within 7.9 s need 13 steps per cycle: within twice its demand.
    sched, stream, fresh, out, _ = _stalled_stream(paper, "reject", 2.0)
    assert not stream.status.is_finished and "stream" in out.requests
    assert sched.num_rejected == 0


def test_relegated_stream_waits_behind_requests_that_can_make_it_and_is_not_refused(paper):
    sched, stream, fresh, out, now = _stalled_stream(paper, "relegate", 6.0)
    assert "stream" not in out.requests and "fresh" in out.requests
    assert "stream" not in sched.selection.mask.rows and sched.num_rejected == 0
    # Once nothing that can still make its SLO is left, the lost stream is served (work conserving).
    while not fresh.status.is_finished:
        sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
        now += 0.02
        sched.update(out, ModelOutput(sampled=sampled, elapsed_s=0.02), now)
        out = sched.schedule(now)
    assert "stream" in out.requests and not stream.status.is_finished


def test_parked_stream_leaves_what_reject_would_refuse_and_comes_back_when_nothing_else_runs(paper):
    sched, stream, fresh, out, now = _stalled_stream(paper, "park", 6.0)
    # The same batch as `reject` plans, and the stream is out of the queues and the KV, not refused.
    assert "stream" not in out.requests and "fresh" in out.requests
    assert stream.status is RequestStatus.PARKED and sched.parked == [stream] and sched.num_rejected == 0
    assert sched.kv.num_blocks_held("stream") == 0 and "stream" not in sched.selection.mask.rows
    ended = sched.update(out, ModelOutput(sampled={"fresh": 5} if out.samples("fresh") else {}, elapsed_s=0.02),
                         now + 0.02)
    assert stream not in ended and sched.last_parked == [stream]
    while not fresh.status.is_finished:
        now += 0.02
        out = sched.schedule(now)
        assert "stream" not in out.requests   # fresh work is there: the parked stream waits
        sampled = {rid: 5 for rid in out.requests if out.samples(rid)}
        sched.update(out, ModelOutput(sampled=sampled, elapsed_s=0.02), now + 0.02)
    # Nothing else left: it comes back, recomputes what it had, and is served (not parked again).
    out = sched.schedule(now + 0.04)
    assert "stream" in out.requests and not sched.parked and stream.status is RequestStatus.RUNNING
    assert out.prefill.get("stream", 0) > 1   # its prompt and its first token again: the KV was freed


def test_hopeless_parks_a_lost_stream_that_could_still_make_it_alone(paper):
    # Lost by SLICE's test (26 steps per cycle > 2 x its demand), but its 99 tokens at l(1) (~10 ms each on
    # this profile) fit the 3.9 s left: not hopeless, so it is parked, not refused.
    sched, stream, fresh, out, now = _stalled_stream(paper, "hopeless", 6.0)
    assert hopeless_reason(stream, now, sched.latency, 512) is None
    assert "stream" not in out.requests and "fresh" in out.requests
    assert stream.status is RequestStatus.PARKED and sched.num_rejected == 0


def test_hopeless_refuses_a_stream_that_cannot_make_it_even_alone_and_says_why(paper):
    # After a 9.8 s stall, 99 tokens are due within 0.08 s: no device speed saves it.
    sched, stream, fresh, out, now = _stalled_stream(paper, "hopeless", 9.8)
    assert "stream" not in out.requests
    ended = sched.update(out, ModelOutput(sampled={}, elapsed_s=0.02), now + 0.02)
    assert stream in ended and stream.finish_reason is FinishReason.REJECTED
    assert "SLO can no longer be met (TPOT: 99 gaps would average" in stream.error and "even alone" in stream.error
    assert sched.num_rejected == 1 and not sched.parked


def test_hopeless_refuses_a_parked_stream_at_the_first_rebuild_that_finds_it_hopeless(paper):
    sched, stream, fresh, out, now = _stalled_stream(paper, "hopeless", 6.0)
    assert stream.status is RequestStatus.PARKED
    finished = []
    sched.on_finish = lambda req, t: finished.append(req.req_id)   # counts the policy's per-request ends
    sched.update(out, ModelOutput(sampled={}, elapsed_s=0.02), now + 0.02)
    assert finished == ["stream"]   # on_parked: the parked stream left the policy's sight
    # 99 tokens at l(1) no longer fit what is left of its 9.9 s once ~9 s have passed since its first token;
    # an arrival then makes SLICE rebuild.
    late = stream.token_times_s[0] + 9.5
    assert hopeless_reason(stream, late, sched.latency, 512) is not None
    sched.add_request(make_req("next", arrival=late, prompt=32, max_tokens=20, ttft=1.0, tpot=0.1, utility=1.0,
                               cls="nrt-100"), late)
    out = sched.schedule(late)
    assert stream.finish_reason is FinishReason.REJECTED and stream not in sched.parked
    assert "SLO can no longer be met (TPOT:" in stream.error
    ended = sched.update(out, ModelOutput(sampled={}, elapsed_s=0.02), late + 0.02)
    assert stream in ended and finished.count("stream") == 1   # told once, when it was parked


def test_hopeless_reason_reads_the_e2e_bound_and_the_prompt_still_to_run(paper):
    lat = paper.copy()
    req = make_req("batch", arrival=0.0, prompt=512, max_tokens=50, ttft=None, tpot=None, e2e=1.0, utility=1.0,
                   cls="batch")
    # The prompt in chunks of 256 (here, two), then 49 decode steps: the first token comes with the prompt.
    need = lat.prefill_time(256) + lat.prefill_time(256, 256) + 49 * lat.decode_time(1, 512)
    assert hopeless_reason(req, 1.0 - need - 0.01, lat, 256) is None
    why = hopeless_reason(req, 1.0 - need + 0.01, lat, 256)
    assert why is not None and why.startswith("e2e: 50 more tokens need")


def test_hopeless_reason_lets_a_stream_that_may_stop_early_stop_at_its_next_token(paper):
    # No ignore_eos: the request may end at any token, so an e2e bound that one more token still meets is not
    # hopeless, whatever 99 more would need.
    lat = paper.copy()
    req = make_req("chat", arrival=0.0, prompt=32, max_tokens=100, ttft=None, tpot=None, e2e=1.0, utility=1.0,
                   cls="chat")
    req.sampling_params = SamplingParams(max_tokens=100)
    req.output_token_ids.append(5)
    req.token_times_s.append(0.5)
    req.num_computed_tokens = 33
    now = 1.0 - 2 * lat.decode_time(1, 33)
    assert hopeless_reason(req, now, lat, 256) is None
    req.sampling_params = SamplingParams(max_tokens=100, ignore_eos=True)
    assert hopeless_reason(req, now, lat, 256).startswith("e2e: 99 more tokens need")


def test_hopeless_prices_steps_alone_at_the_idle_profile_not_at_the_load_of_the_moment(paper):
    # A stream with 99 gaps to average under 100 ms, 50 tokens out on its line, then stalled: the rest alone at
    # the profiled l(1) still makes it. With the online decode factor at 1.4 (iterations under load cost that
    # much more; live run 25 ended at 1.38) the same steps priced at the calibrated l(1) would call it hopeless.
    lat = paper.copy()
    req = make_req("s", arrival=0.0, prompt=32, max_tokens=100, ttft=1.0, tpot=0.1, utility=1.0, cls="nrt-100")
    req.output_token_ids.extend([5] * 50)
    req.token_times_s.extend(0.2 + 0.1 * i for i in range(50))
    req.num_computed_tokens = 81
    step = lat.decode_time(1, req.num_tokens)
    now = 0.2 + 99 * 0.1 - 50 * step * 1.2   # 50 more steps fit at 1.2x the profiled l(1), not at 1.4x
    assert hopeless_reason(req, now, lat, 256) is None
    lat.decode_factor = 1.4
    assert hopeless_reason(req, now, lat, 256) is None   # before the fix: "TPOT: 99 gaps would average ..."
    lat.decode_factor = 1.0
    assert hopeless_reason(req, now + 50 * step * 0.25, lat, 256) is not None   # too late even at the profile's pace
    # An online factor below 1 (the device is faster than profiled) is taken as it is.
    lat.decode_factor = 0.7
    assert hopeless_reason(req, now + 50 * step * 0.25, lat, 256) is None


def test_off_serves_the_lost_stream_best_effort(paper):
    sched, stream, fresh, out, _ = _stalled_stream(paper, "off", 6.0)
    assert "stream" in sched.selection.mask.rows and not stream.status.is_finished
    assert sched.num_rejected == 0


def test_a_prompt_past_its_ttft_is_refused_even_without_slice_reject_lost(paper):
    sched = make_slice(paper.copy(), slice_drop_lost="reject", slice_reject_lost=False)
    late = make_req("late", arrival=0.0, prompt=32, ttft=0.5)
    sched.add_request(late, 0.0)
    out = sched.schedule(0.6)   # nothing ran for 0.6 s: its TTFT has passed with no token
    assert not out.requests
    assert sched.update(out, ModelOutput(sampled={}, elapsed_s=0.0), 0.6) == [late]
    assert late.finish_reason is FinishReason.REJECTED


def test_a_request_without_an_slo_is_never_lost(paper):
    sched = make_slice(paper.copy(), slice_drop_lost="reject")
    free = make_req("free", arrival=0.0, prompt=32, ttft=None, tpot=None, utility=1.0, cls="batch")
    sched.add_request(free, 0.0)
    assert "free" in sched.schedule(100.0).requests and sched.num_rejected == 0


def test_the_queue_limit_leaves_a_parked_stream_to_hopeless_which_refuses_it_once_certain(paper):
    # Under `park` (best effort) the queue's time limit is what ends a parked stream nobody served; under
    # `hopeless` a stream with a TPOT bound waits for the policy's own verdict, since it may still make it.
    for mode, limited in (("park", True), ("hopeless", False)):
        sched, stream, fresh, out, now = _stalled_stream(paper, mode, 6.0)
        assert stream.status is RequestStatus.PARKED
        assert sched.ends_parked_when_hopeless is (mode == "hopeless")
        late = late_requests(sched, stream.parked_s + 61.0, max_queue_time_s=60.0)
        assert [r for r, _ in late if r is stream] == ([stream] if limited else [])
    # A parked stream without a TPOT or e2e bound would never become hopeless: the limit still ends it.
    sched, stream, fresh, out, now = _stalled_stream(paper, "hopeless", 6.0)
    stream.slo = SLO(ttft_s=1.0)
    assert (stream, 60.0) in late_requests(sched, stream.parked_s + 61.0, max_queue_time_s=60.0)
