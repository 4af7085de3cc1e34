"""`bench --url`: the workload replayed over HTTP produces the simulate-shaped JSON, table and goodput."""
from __future__ import annotations

import argparse

import pytest

from sliceserve.bench.http import http_error, parse_goodput, run_http
from sliceserve.bench.report import summary_table
from sliceserve.cli import bench_cmd
from tests.server.helpers import LiveServer, make_state


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_cmd.add_parser(parser)
    return parser.parse_args(list(argv))


def test_parse_goodput_rejects_bad_bounds():
    assert parse_goodput(["ttft:500", "e2el:2000"]) == {"ttft": 0.5, "e2el": 2.0}
    for bad in (["ttft"], ["itl:5"], ["tpot:-1"], ["tpot:fast"]):
        with pytest.raises(ValueError):
            parse_goodput(bad)


def test_bench_url_replays_workload_and_reports(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory(), max_model_len=512)) as live:
        args = _args("--url", live.url, "--workload", "edge-mix", "--request-rate", "6", "--duration", "1.5",
                     "--no-progress", "--slo-scale", "20", "--goodput", "ttft:60000", "e2el:60000")
        out = run_http(args)
    assert list(out["results"]) == ["vllm"]           # the server's policy, from /ready
    res = out["results"]["vllm"]
    s = res["summary"]
    n = out["config"]["workload"]["num_requests"]
    assert n > 0 and s["num_requests"] == n
    # Every request ended with a response; nothing was refused on an idle tiny model.
    assert s["num_finished"] == n and s["num_rejected"] == 0 and s["num_errored"] == 0
    assert all(r["num_output_tokens"] > 0 and r["ttft_s"] > 0 for r in res["requests"])
    assert s["num_good"] == n and s["request_goodput"] > 0
    assert set(res["per_class"]) >= {"realtime"}
    table = summary_table(out["results"])
    assert "ALL" in table and "vllm" in table


def test_bench_url_never_takes_its_scale_from_the_server():
    # Before: with no --slo-scale, the bounds came from the server's /ready estimate, so an inflated estimate
    # loosened the bounds the server was graded by. Now the user or a pinned profile must say, before any
    # request is sent (the URL is never contacted).
    args = _args("--url", "http://127.0.0.1:9", "--request-rate", "1", "--duration", "1")
    with pytest.raises(ValueError, match="--slo-scale.*--profile"):
        run_http(args)


def test_bench_url_scale_from_a_pinned_profile(tmp_path):
    from sliceserve.bench.http import _chosen_scale
    from sliceserve.core.latency import load_profile

    ref = load_profile("paper-4060ti")
    slow = ref.copy()
    slow.scale(3.0)                     # a device 3x slower than the reference everywhere
    path = tmp_path / "device.json"
    slow.save(path)
    scale = _chosen_scale(_args("--url", "http://x", "--request-rate", "1", "--duration", "1",
                                "--profile", str(path)))
    assert scale.slo == pytest.approx(3.0) and scale.ttft == pytest.approx(3.0)
    assert str(path) in scale.rule
    given = _chosen_scale(_args("--url", "http://x", "--request-rate", "1", "--duration", "1",
                                "--slo-scale", "4.5", "--ttft-scale", "11"))
    assert (given.slo, given.ttft) == (4.5, 11.0)


def test_a_refusals_message_is_kept_whole_for_the_benchmarks_that_read_it():
    # Run 18's request file cut admission's reason at 200 characters, just before the prediction's parts.
    why = ("SLO cannot be met under the current load: predicted ttft 4417 ms > 3989.88 ms (1 of 1 queued requests "
           "ahead in slice's order, 480 prompt tokens queued ahead + its own 268: prefill 1012 ms of device time, "
           "in what 3 paced streams ahead leave (they take 77% of it now))")
    body = '{"error":{"message":"' + why + '","type":"rate_limit_error","code":"overloaded"}}'
    assert http_error(429, body) == f"HTTP 429: {why}"
    assert http_error(502, "<html>" + "x" * 500) == "HTTP 502: <html>" + "x" * 194   # not JSON: its start


@pytest.mark.parametrize("code, kind", [("slo_infeasible", "rejected"), ("queue_timeout", "rejected"),
                                        ("error", "error")])
def test_a_refusal_mid_stream_counts_as_a_refusal(code, kind):
    """SLICE refuses a started stream whose SLO is lost with an in-stream 429-coded error. Before, only the queue
    timeout counted as a refusal, so the live benchmark's false refusals left those out (live-fidelity.md)."""
    import asyncio
    import json

    import httpx

    from sliceserve.bench.http import _send
    from sliceserve.request import Request, SamplingParams

    def handler(request: httpx.Request) -> httpx.Response:
        events = [{"choices": [{"text": "a", "finish_reason": None}]},
                  {"error": {"message": "SLO cannot be met under the current load: SLO can no longer be met",
                             "code": code}}]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    req = Request("r", [1, 2], SamplingParams(max_tokens=8), 0.0)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as client:
            await _send(client, req, "m", 0.0)

    asyncio.run(go())
    assert req.finish_reason.value == kind
    assert "no longer be met" in req.error
