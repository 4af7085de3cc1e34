"""GET /v1/status on a live server (tiny model), controller metrics on /metrics, and offline operation:
generation with every non-loopback socket blocked."""
from __future__ import annotations

import socket

import httpx
import pytest

pytest.importorskip("torch")

from tests.server.helpers import LiveServer, make_state  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir):
    import torch

    from sliceserve.model.loader import load_model

    torch.set_num_threads(1)
    return load_model(str(tiny_llama_dir), num_threads=1, kv_cache_memory_bytes=4 << 20, max_model_len=512)


def test_status_reports_resources_queues_classes_policy_and_controller(loaded):
    state = make_state(loaded, policy="slice", scheduler={"enable_prefix_caching": True})
    with LiveServer(state) as live:
        client = live.openai()
        for _ in range(3):
            client.completions.create(model="tiny", prompt="Hello there, this is a shared prefix of a prompt! " * 4,
                                      max_tokens=4, extra_body={"slo_class": "interactive"})
        body = httpx.get(live.url + "/v1/status", timeout=10).json()
        metrics = httpx.get(live.url + "/metrics", timeout=10).text
    assert body["model"] == "tiny" and body["device"] == "cpu"
    assert body["resources"]["mem_total_bytes"] > 0 and body["resources"]["process_rss_bytes"] > 0
    assert set(body["queues"]) >= {"running", "waiting", "kv_cache_usage"}
    assert body["policy"]["name"] == "slice" and "slice_margin" in body["policy"]["settings"]
    assert body["policy"]["settings"]["enable_prefix_caching"] is True
    assert body["prefix_cache"]["hit_tokens"] > 0
    assert body["classes"]["interactive"]["finished"] == 3
    assert body["classes"]["interactive"]["ttft_ms"]["n"] == 3
    ctl = body["controller"]
    assert ctl["enabled"] is True and ctl["slice_margin"] >= 0.05 and "decisions" in ctl
    assert "sliceserve:controller_calibration_scale" in metrics


def test_the_latency_model_is_audited_live(loaded):
    """Every iteration's predicted and measured time: /v1/status's rolling error and coefficients, the
    Prometheus histogram, and each reply's admission-time predictions beside its measured times."""
    with LiveServer(make_state(loaded, policy="slice")) as live:
        client = live.openai()
        reply = client.completions.create(model="tiny", prompt="Audit the model " * 8, max_tokens=6,
                                          extra_body={"slo": {"ttft_ms": 60000, "tpot_ms": 60000}})
        body = httpx.get(live.url + "/v1/status", timeout=10).json()
        metrics = httpx.get(live.url + "/metrics", timeout=10).text
    report = reply.model_extra["slo_report"]
    assert report["predicted_ttft_ms"] > 0 and report["predicted_tpot_ms"] > 0 and report["ttft_ms"] > 0
    lat = body["latency_model"]
    assert lat["factors"]["decode"] > 0 and lat["coefficients"]["decode_table_s"]
    # One prompt (prefill-only iteration) then five decode-only steps.
    assert lat["rolling_error"]["decode"]["n"] >= 5 and lat["rolling_error"]["prefill"]["n"] >= 1
    assert {r["kind"] for r in lat["recent"]} >= {"decode", "prefill"}
    assert all(r["predicted_ms"] > 0 and r["measured_ms"] > 0 for r in lat["recent"])
    assert 'sliceserve:latency_model_relative_error_count{kind="decode"}' in metrics


def test_generation_needs_no_network(monkeypatch, tiny_llama_dir):
    """Everything (loading weights and tokenizer, generating) with non-loopback sockets refused."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def loopback(host: object) -> bool:
        return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback(host):
            attempts.append(address)
            raise OSError(f"network blocked by test: {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not loopback(host):
            attempts.append(host)
            raise socket.gaierror(f"name resolution blocked by test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    from sliceserve.engine.llm import LLM
    from sliceserve.request import SamplingParams

    llm = LLM(str(tiny_llama_dir), policy="slice", profile="paper-4060ti", kv_cache_memory_bytes=4 << 20,
              num_threads=1, enable_prefix_caching=True)
    out = llm.generate(["Hello there", "Hello there, again"], SamplingParams(max_tokens=5, ignore_eos=True))
    assert [len(o.token_ids) for o in out] == [5, 5]
    assert attempts == []
    # The guard itself works: a non-loopback connection is refused and recorded.
    with socket.socket() as s, pytest.raises(OSError, match="blocked"):
        s.connect(("192.0.2.1", 80))
    assert attempts == [("192.0.2.1", 80)]
