"""Bad inputs answer OpenAI-shaped errors with the right status and the server keeps serving; SLO fields,
headers and admission; /metrics."""
from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import LiveServer, make_state


@pytest.fixture(scope="module")
def server(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory())) as live:
        yield live


def _post(server, path, **kw):
    return httpx.post(server.url + path, timeout=30, **kw)


def _ok(server) -> None:
    r = _post(server, "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200, r.text


JSON = {"content-type": "application/json"}
BAD = [
    ("malformed json", "/v1/completions", {"content": b'{"prompt": "x", ',
                                           "headers": {"content-type": "application/json"}}, 400, None),
    ("not an object", "/v1/completions", {"json": [1, 2]}, 400, None),
    ("wrong type", "/v1/completions", {"json": {"prompt": "x", "max_tokens": "many"}}, 400, "max_tokens"),
    ("missing prompt", "/v1/completions", {"json": {"model": "tiny"}}, 400, "prompt"),
    ("unknown model", "/v1/completions", {"json": {"model": "gpt-9", "prompt": "x"}}, 404, "model"),
    ("max_tokens zero", "/v1/completions", {"json": {"prompt": "x", "max_tokens": 0}}, 400, "max_tokens"),
    ("max_tokens negative", "/v1/chat/completions",
     {"json": {"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}}, 400, "max_tokens"),
    ("over-long prompt", "/v1/completions", {"json": {"prompt": [5] * 600, "max_tokens": 1}}, 400, "prompt"),
    ("prompt+max_tokens too long", "/v1/completions", {"json": {"prompt": [5] * 500, "max_tokens": 100}}, 400,
     "max_tokens"),
    ("unknown slo_class", "/v1/chat/completions",
     {"json": {"messages": [{"role": "user", "content": "x"}], "slo_class": "gold"}}, 400, "slo_class"),
    ("bad slo field", "/v1/completions", {"json": {"prompt": "x", "slo": {"ttft_ms": -5}}}, 400, "slo.ttft_ms"),
    ("bad slo header", "/v1/completions", {"json": {"prompt": "x"}, "headers": {"x-slo-tpot-ms": "soon"}}, 400,
     "x-slo-tpot-ms"),
    ("empty messages", "/v1/chat/completions", {"json": {"messages": []}}, 400, "messages"),
    ("token out of vocab", "/v1/completions", {"json": {"prompt": [10**9]}}, 400, "prompt"),
    ("unknown route", "/v1/audio/speech", {"json": {}}, 404, None),
    # The inputs that used to escape validation as 500s (issue 22), and nonsense it used to accept.
    ("subnormal slo", "/v1/completions", {"json": {"prompt": "x", "slo": {"ttft_ms": 5e-324}}}, 400, "slo.ttft_ms"),
    ("infinite slo", "/v1/completions", {"content": b'{"prompt": "x", "slo": {"ttft_ms": Infinity}}', "headers": JSON},
     400, "slo.ttft_ms"),
    ("overflowing slo", "/v1/completions", {"content": b'{"prompt": "x", "slo": {"ttft_ms": 1e309}}', "headers": JSON},
     400, "slo.ttft_ms"),
    ("lone surrogate", "/v1/completions", {"content": b'{"prompt": "\\ud800"}', "headers": JSON}, 400, "prompt"),
    ("deep nesting", "/v1/completions", {"content": b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                         "headers": JSON}, 400, None),
    ("subnormal slo header", "/v1/completions", {"json": {"prompt": "x"}, "headers": {"x-slo-ttft-ms": "5e-324"}},
     400, "x-slo-ttft-ms"),
    ("huge top_k", "/v1/completions", {"json": {"prompt": "x", "top_k": 1e30}}, 400, "top_k"),
    ("negative seed", "/v1/completions", {"json": {"prompt": "x", "seed": -1}}, 400, "seed"),
    ("negative stop id", "/v1/completions", {"json": {"prompt": "x", "stop_token_ids": [-1]}}, 400, "stop_token_ids[0]"),
    ("infinite temperature", "/v1/completions", {"content": b'{"prompt": "x", "temperature": Infinity}',
                                                 "headers": JSON}, 400, "temperature"),
    ("huge penalty", "/v1/completions", {"json": {"prompt": "x", "presence_penalty": 1e9}}, 400, "presence_penalty"),
    ("impossible e2e", "/v1/completions", {"json": {"prompt": "x", "slo": {"e2e_ms": 0.001}}}, 400, None),
]


@pytest.mark.parametrize("name,path,kw,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gives_openai_error_and_server_keeps_serving(server, name, path, kw, status, param):
    r = _post(server, path, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    _ok(server)


def test_openai_client_raises_typed_errors(server):
    import openai

    client = server.openai()
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="slo_class"):
        client.completions.create(model="tiny", prompt="x", extra_body={"slo_class": "platinum"})


def test_slo_report_reflects_class_body_and_headers(server):
    client = server.openai()
    resp = client.completions.create(model="tiny", prompt="hello", max_tokens=4,
                                      extra_body={"slo_class": "interactive", "slo": {"tpot_ms": 400},
                                                  "ignore_eos": True},
                                      extra_headers={"x-slo-ttft-ms": "3000", "x-slo-tpot-ms": "900"})
    report = resp.model_extra["slo_report"]
    # ttft from the header overrides the class's 1000 ms; tpot from the body overrides the header.
    assert report["slo"] == {"ttft_ms": 3000.0, "tpot_ms": 400.0, "e2e_ms": None}
    assert report["slo_class"] == "interactive"
    assert 0 < report["ttft_ms"] <= report["e2e_ms"]
    assert report["tpot_ms"] > 0
    assert report["met"] == (report["ttft_ms"] <= 3000 and report["tpot_ms"] <= 400)


def test_streaming_final_chunk_carries_slo_report(server):
    client = server.openai()
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                                  max_tokens=3, stream=True, extra_body={"slo_class": "batch"}))
    reports = [c.model_extra.get("slo_report") for c in chunks if c.model_extra.get("slo_report")]
    assert len(reports) == 1 and reports[0]["slo"]["e2e_ms"] == 60000.0 and reports[0]["met"] is True


def test_slo_impossible_on_idle_device_is_400(server):
    r = _post(server, "/v1/completions", json={"prompt": "hello", "slo": {"ttft_ms": 0.001}})
    assert r.status_code == 400 and "idle device" in r.json()["error"]["message"]
    r = _post(server, "/v1/completions", json={"prompt": "hello"}, headers={"x-slo-tpot-ms": "0.01"})
    assert r.status_code == 400 and "decode step" in r.json()["error"]["message"]
    _ok(server)


def test_metrics_exposition_has_vllm_and_sliceserve_names(server):
    client = server.openai()
    client.completions.create(model="tiny", prompt="m", max_tokens=3, extra_body={"slo_class": "realtime",
                                                                                  "ignore_eos": True})
    # An e2e bound above the one-token prefill (so admitted) that 200 decode steps cannot meet records a
    # violation (admission refuses only bounds impossible on an idle device).
    client.completions.create(model="tiny", prompt="m", max_tokens=200, extra_body={
        "slo": {"e2e_ms": 20}, "slo_class": "interactive", "ignore_eos": True})
    text = httpx.get(server.url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:e2e_request_latency_seconds", "vllm:prompt_tokens", "vllm:generation_tokens",
                 "sliceserve:slo_attainment", "sliceserve:slo_violations", "sliceserve:slo_violation_risk"):
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("sliceserve:slo_attainment", (("slo_class", "realtime"),))] == 1.0
    assert samples[("sliceserve:slo_violations_total", (("metric", "e2e"), ("slo_class", "interactive")))] >= 1
    assert samples[("vllm:generation_tokens_total", (("model_name", "tiny"),))] >= 203
    assert samples[("vllm:num_requests_running", (("model_name", "tiny"),))] == 0
