"""A request the policy refuses once its SLO can no longer be met (Scheduler.reject: scorpio's TTFT guard,
SLICE's slice_reject_lost) is answered at once with 429 + Retry-After (code slo_infeasible), not with the
queue timeout's 503, and the server goes on serving. SLICE refuses lost requests only in overload=reject;
with best_effort it parks them (`Scheduler.park`)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import httpx

from sliceserve.core.scheduler import SLO_REFUSAL
from sliceserve.engine.async_engine import StreamEvent
from sliceserve.request import FinishReason
from sliceserve.server.serving import _failure
from tests.server.helpers import LiveServer, make_state, wait_until, wrap


@contextmanager
def _busy_stream(live: LiveServer):
    """A 60-token stream that holds the device; yields its lines once the first has come."""
    body = {"prompt": "x y z", "max_tokens": 60, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=30) as first:
        lines = first.iter_lines()
        next(lines)
        yield lines


def test_policy_refusal_is_429_and_queue_timeout_stays_503():
    refused = _failure(StreamEvent([], True, FinishReason.REJECTED, f"{SLO_REFUSAL}: TTFT: too late"))
    assert refused.status == 429 and refused.code == "slo_infeasible" and refused.headers["Retry-After"] == "1"
    timed_out = _failure(StreamEvent([], True, FinishReason.REJECTED, "no first token within max_queue_time 1 s"))
    assert timed_out.status == 503 and timed_out.code == "queue_timeout"


def test_scorpio_refuses_an_infeasible_ttft_at_once_and_keeps_serving(tiny_loaded_factory):
    state = make_state(wrap(tiny_loaded_factory(), delay_s=0.02), policy="scorpio")
    with LiveServer(state) as live:
        with _busy_stream(live) as lines:
            # Feasible on an idle device (so admission, best_effort by default, lets it in), but not behind
            # the running decode: scorpio's TTFT guard refuses it on its first plan().
            ttft_ms = live.scheduler.latency.prefill_time(300) * 1e3 * 1.05
            r = httpx.post(live.url + "/v1/completions", timeout=30,
                           json={"prompt": [5] * 300, "max_tokens": 4, "slo": {"ttft_ms": ttft_ms}})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "slo_infeasible" and int(r.headers["retry-after"]) >= 1
            assert "TTFT" in r.json()["error"]["message"]
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"   # the running stream was not disturbed
        ok = httpx.post(live.url + "/v1/completions", timeout=30, json={"prompt": "x", "max_tokens": 3})
        assert ok.status_code == 200
        assert wait_until(lambda: not live.scheduler.requests)


def test_slice_refuses_lost_requests_only_in_reject_mode(tiny_loaded_factory):
    loaded = tiny_loaded_factory()
    assert make_state(loaded, policy="slice", overload="reject").engine.core.scheduler.config.slice_reject_lost
    assert not make_state(loaded, policy="slice").engine.core.scheduler.config.slice_reject_lost
    # An explicit scheduler setting wins over the overload mode.
    explicit = make_state(loaded, policy="slice", scheduler={"slice_reject_lost": True})
    assert explicit.engine.core.scheduler.config.slice_reject_lost
    # Lost streams (slice_drop_lost) likewise: refused only in reject mode (the hopeless ones; the rest parked),
    # unless set explicitly;
    assert make_state(loaded, policy="slice", overload="reject").engine.core.scheduler.config.slice_drop_lost == "hopeless"
    # best_effort (the default) parks them instead: served when the device has nothing else to do.
    assert make_state(loaded, policy="slice").engine.core.scheduler.config.slice_drop_lost == "park"
    relegate = make_state(loaded, policy="slice", scheduler={"slice_drop_lost": "relegate"})
    assert relegate.engine.core.scheduler.config.slice_drop_lost == "relegate"


def test_best_effort_parks_what_reject_refuses_and_serves_it_once_the_device_is_free(tiny_loaded_factory):
    """`overload: best_effort` (the default): a request whose SLO admission predicts missed is not refused but
    parked (`Scheduler.park`): it waits without KV while the running stream has the device, shows in
    /v1/status, and is served once nothing else is left; the client gets its completion."""
    state = make_state(wrap(tiny_loaded_factory(), delay_s=0.02), policy="slice")
    with LiveServer(state) as live:
        with _busy_stream(live) as lines:
            ttft_ms = live.scheduler.latency.prefill_time(300) * 1e3 * 1.05   # feasible only on an idle device
            with httpx.Client(timeout=30) as client:
                answer = {}
                late = threading.Thread(target=lambda: answer.update(r=client.post(
                    live.url + "/v1/completions",
                    json={"prompt": [5] * 300, "max_tokens": 4, "slo": {"ttft_ms": ttft_ms}})))
                late.start()
                assert wait_until(lambda: live.scheduler.parked)
                status = httpx.get(live.url + "/v1/status", timeout=10).json()
                assert status["queues"]["parked"] == 1 and status["queues"]["waiting"] >= 1
                rest = [line for line in lines if line]
                late.join(30)
        assert rest[-1] == "data: [DONE]"   # the running stream was not disturbed
        r = answer["r"]
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
        assert wait_until(lambda: not live.scheduler.requests)
