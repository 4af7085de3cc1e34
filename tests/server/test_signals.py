"""Honest signals: Prometheus gauges follow aborts at once (not at the next model step), /health reports
a dead engine, and Retry-After comes from the latency model's estimate of the queue's drain time."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sliceserve.core.latency import LatencyModel
from sliceserve.request import Request, SamplingParams
from sliceserve.server.admission import drain_estimate
from tests.server.helpers import LiveServer, make_state, wait_until, wrap


def _gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:num_requests_waiting")}


def test_gauges_fall_to_zero_right_after_aborts(tiny_loaded_factory):
    # Slow steps (50 ms): two streams stay running while the test watches.
    with LiveServer(make_state(wrap(tiny_loaded_factory(), delay_s=0.05))) as live:
        body = {"prompt": "x y z", "max_tokens": 300, "ignore_eos": True, "stream": True}
        first = [threading.Event(), threading.Event()]
        stop = threading.Event()

        def stream(started: threading.Event) -> None:
            with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=30) as r:
                for _ in r.iter_lines():
                    started.set()
                    if stop.is_set():
                        return       # closing the response is the client going away: an abort

        threads = [threading.Thread(target=stream, args=(e,)) for e in first]
        for t in threads:
            t.start()
        assert all(e.wait(30) for e in first)
        assert wait_until(lambda: _gauges(live.url)["vllm:num_requests_running"] == 2, timeout_s=10)
        assert _gauges(live.url)["vllm:kv_cache_usage_perc"] > 0
        stop.set()
        for t in threads:
            t.join(10)
        # Nothing is left to step after the aborts; the gauges must still say so within a second.
        assert wait_until(lambda: _gauges(live.url) == {"vllm:num_requests_running": 0.0,
                                                        "vllm:num_requests_waiting": 0.0,
                                                        "vllm:kv_cache_usage_perc": 0.0}, timeout_s=1.0)


def test_health_reports_a_dead_engine(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory())) as live:
        assert httpx.get(live.url + "/health").json() == {"status": "ok"}
        live.state.engine.shutdown()
        r = httpx.get(live.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "engine_dead"


def _req(rid: str, prompt: int, max_tokens: int, computed: int = 0, out: int = 0) -> Request:
    r = Request(rid, [1] * prompt, SamplingParams(max_tokens=max_tokens), 0.0)
    r.output_token_ids = [2] * out
    r.num_computed_tokens = computed
    return r


def test_drain_estimate_counts_queued_prefill_and_every_remaining_token():
    lat = LatencyModel([0.1, 0.15, 0.2, 0.25], prefill_base_s=0.0, prefill_per_token_s=0.001, name="t")
    running = [_req("a", 10, 50, computed=20, out=10)]                       # 40 tokens to go
    waiting = [_req("b", 100, 20), _req("c", 100, 20)]                       # 200 prompt tokens, 40 outputs
    sched = SimpleNamespace(latency=lat, running=running, waiting=waiting, config=SimpleNamespace(max_num_seqs=4, max_num_batched_tokens=512))
    batch = 3
    ctx = (20 + 100 + 100) / 3
    expected = lat.prefill_time(200) + lat.decode_time(batch, ctx) * -(-80 // batch)
    assert abs(drain_estimate(sched) - expected) < 1e-12
    assert drain_estimate(sched) > 5.0        # seconds of work: a fixed 1 s Retry-After would be wrong
    empty = SimpleNamespace(latency=lat, running=[], waiting=[], config=SimpleNamespace(max_num_seqs=4, max_num_batched_tokens=512))
    assert drain_estimate(empty) == 0.0
