"""A full waiting queue refuses its least valuable unstarted request, not a more valuable newcomer: an
embedding flood cannot keep the real-time class out at the door."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.server.helpers import LiveServer, make_state, wait_until, wrap


def test_higher_utility_newcomer_displaces_the_least_valuable_waiting_request(tiny_loaded_factory):
    loaded = wrap(tiny_loaded_factory(), delay_s=0.02)
    with LiveServer(make_state(loaded, max_num_seqs=1, max_waiting=1, slo_scale=1000)) as live:
        body = {"prompt": "x y z", "max_tokens": 100, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=30) as first:
            lines = first.iter_lines()
            next(lines)                                   # running: the one sequence slot is taken
            with httpx.Client(timeout=30) as c, ThreadPoolExecutor(1) as pool:
                # Waits (max_num_seqs=1) and so fills the queue; its answer comes only when it ends.
                pending = pool.submit(c.post, live.url + "/v1/embeddings", json={"input": "queued embedding"})
                assert wait_until(lambda: len(live.scheduler.waiting) == 1)
                same = c.post(live.url + "/v1/embeddings", json={"input": "another one"})
                assert same.status_code == 503 and same.json()["error"]["code"] == "queue_full"
                # A more valuable newcomer that would be refused anyway (impossible TTFT) displaces nobody.
                hopeless = c.post(live.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2,
                                                                      "slo_class": "realtime", "slo": {"ttft_ms": 1e-6}})
                assert hopeless.status_code == 400 and len(live.scheduler.waiting) == 1
                rt = c.post(live.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, "ignore_eos": True,
                                                                "slo_class": "realtime"})
                assert rt.status_code == 200 and rt.json()["usage"]["completion_tokens"] == 2
                displaced = pending.result()
                assert displaced.status_code == 503
                assert "displaced" in displaced.json()["error"]["message"]
