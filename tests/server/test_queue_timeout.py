"""max_queue_time_s: a request that is never scheduled ends with an answer (503 with code queue_timeout,
streaming or not), counts as a rejection in /metrics, and does not disturb the requests being served."""
from __future__ import annotations

import asyncio

import httpx

from tests.server.helpers import LiveServer, make_state, wrap


def test_requests_not_scheduled_in_time_get_503_and_the_rest_complete(tiny_loaded_factory):
    # One sequence at a time, 20 ms per step: the first request holds the batch for ~0.6 s, so the others
    # wait longer than the 0.25 s queue limit.
    state = make_state(wrap(tiny_loaded_factory(), delay_s=0.02), max_num_seqs=1, max_queue_time_s=0.25)
    with LiveServer(state) as live:
        async def go():
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                body = {"model": "tiny", "prompt": "hello", "max_tokens": 30, "ignore_eos": True}
                first = asyncio.create_task(c.post("/v1/completions", json=body))
                await asyncio.sleep(0.1)
                plain = asyncio.create_task(c.post("/v1/completions", json=body))
                streamed = asyncio.create_task(c.post("/v1/completions", json={**body, "stream": True}))
                return await first, await plain, await streamed
        first, plain, streamed = asyncio.run(go())
        metrics = httpx.get(live.url + "/metrics", timeout=10).text
        assert httpx.get(live.url + "/health", timeout=5).status_code == 200
    assert first.status_code == 200 and first.json()["usage"]["completion_tokens"] == 30
    # Retry-After: the latency model's estimate of the queue's drain time (tests/server/test_signals.py).
    assert plain.status_code == 503 and int(plain.headers["retry-after"]) >= 1
    assert plain.json()["error"]["code"] == "queue_timeout"
    # No byte of the stream was sent before the timeout, so it gets a real status too.
    assert streamed.status_code == 503 and streamed.json()["error"]["code"] == "queue_timeout"
    assert int(streamed.headers["retry-after"]) >= 1
    assert 'finished_reason="rejected"' in metrics
    assert not state.engine.core.scheduler.requests     # nothing left behind
