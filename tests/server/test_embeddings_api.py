"""`/v1/embeddings` through the `openai` client and raw HTTP: every input shape, both encodings, the
embedding SLO class, and clear refusals."""
from __future__ import annotations

import base64
from dataclasses import replace

import httpx
import numpy as np
import pytest

from tests.server.helpers import LiveServer, make_state


@pytest.fixture(scope="module")
def server(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory(), slo_scale=1000)) as live:
        yield live


def _post(server, **body):
    return httpx.post(server.url + "/v1/embeddings", json={"model": "tiny", **body}, timeout=60)


def test_openai_client_float_and_base64_agree(server):
    client = server.openai()
    texts = ["Turn on the kitchen lights.", "What is the weather like?", "Turn on the kitchen lights."]
    as_float = client.embeddings.create(model="tiny", input=texts, encoding_format="float")
    as_b64 = client.embeddings.create(model="tiny", input=texts)     # the client asks for base64 and decodes
    assert [d.index for d in as_float.data] == [0, 1, 2]
    n_tokens = sum(len(server.state.tokenizer.encode(t)) for t in texts)
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == n_tokens
    for f, b in zip(as_float.data, as_b64.data):
        assert len(f.embedding) == 64 and f.embedding == pytest.approx(b.embedding, abs=1e-6)
        assert np.linalg.norm(f.embedding) == pytest.approx(1.0, abs=1e-5)
    v = [np.array(d.embedding) for d in as_float.data]
    assert v[0] @ v[2] == pytest.approx(1.0, abs=1e-5) and v[0] @ v[1] < 0.999   # same text, same vector


def test_input_shapes_and_raw_base64(server):
    tok = server.state.tokenizer
    text = "Robots fold laundry slowly."
    ids = tok.encode(text)
    one = _post(server, input=text, encoding_format="float").json()["data"][0]["embedding"]
    by_ids = _post(server, input=ids, encoding_format="float").json()["data"][0]["embedding"]
    batch = _post(server, input=[ids, tok.encode("Hello")], encoding_format="float").json()["data"]
    assert by_ids == pytest.approx(one, abs=1e-6) and batch[0]["embedding"] == pytest.approx(one, abs=1e-6)
    raw = _post(server, input=text, encoding_format="base64").json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.tolist() == pytest.approx(one, abs=1e-6)


def test_embeddings_run_in_the_embedding_class(server):
    body = _post(server, input=["a", "b"]).json()
    reports = [d["slo_report"] for d in body["data"]]
    assert all(r["slo_class"] == "embedding" and r["slo"]["ttft_ms"] == pytest.approx(2_000_000) for r in reports)
    assert all(r["ttft_ms"] == r["e2e_ms"] and r["tpot_ms"] is None for r in reports)
    custom = _post(server, input="a", slo_class="batch", slo={"e2e_ms": 90000}).json()["data"][0]["slo_report"]
    assert custom["slo_class"] == "batch" and custom["slo"]["e2e_ms"] == 90000


@pytest.mark.parametrize("body, status, field", [
    ({"input": "x", "dimensions": 8}, 400, "dimensions"),
    ({"input": "x", "user": "me"}, 400, "user"),
    ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": ""}, 400, "input"),
    ({"input": []}, 400, "input"),
    ({"input": [10 ** 9]}, 400, "input"),
    ({"input": "x", "slo": {"tpot_ms": 100}}, 400, "slo"),
    ({"input": "x", "slo_class": "nope"}, 400, "slo_class"),
    ({"input": "x", "model": "other"}, 404, "model"),
])
def test_refusals_name_the_field(server, body, status, field):
    resp = httpx.post(server.url + "/v1/embeddings", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["param"] == field or field in err["message"]


def test_too_long_input_is_refused_and_server_keeps_serving(server):
    resp = _post(server, input=[1] * server.state.max_model_len)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "context_length_exceeded"
    assert _post(server, input="still here").status_code == 200


def test_llamacpp_backend_answers_501(tiny_loaded_factory):
    loaded = tiny_loaded_factory()
    with LiveServer(make_state(replace(loaded, backend="llamacpp"))) as live:
        resp = httpx.post(live.url + "/v1/embeddings", json={"input": "x"}, timeout=30)
        assert resp.status_code == 501 and "torch backend" in resp.json()["error"]["message"]
        resp = httpx.post(live.url + "/api/embed", json={"model": "tiny", "input": "x"}, timeout=30)
        assert resp.status_code == 501 and "torch backend" in resp.json()["error"]


def test_client_gone_aborts_its_embeddings(tiny_loaded_factory):
    from tests.server.helpers import wait_until, wrap

    # 16-token chunks at 0.2 s each: a 300-token input needs ~4 s; the client gives up after 0.5 s.
    loaded = wrap(tiny_loaded_factory(), delay_s=0.2)
    with LiveServer(make_state(loaded, max_num_batched_tokens=16, slo_scale=1000)) as live:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(live.url + "/v1/embeddings", json={"input": [[5] * 300, [6] * 300]}, timeout=0.5)
        assert wait_until(lambda: not live.scheduler.requests, timeout_s=2.5)
        assert httpx.post(live.url + "/v1/embeddings", json={"input": "again"}, timeout=30).status_code == 200
