"""SLO text on requests: the `slo` body field and the `x-slo` header read the one grammar (sliceserve.slo) at
request scope; class targets and resources there are 400s naming the scope; the bounds reach the scheduler."""
from __future__ import annotations

import httpx
import pytest

from sliceserve.server.intake import validate_body
from sliceserve.server.protocol import APIError, CompletionRequest
from sliceserve.server.requests import header_slo
from sliceserve.slo import SLO
from tests.server.helpers import LiveServer, make_state

VOCAB, MAX_LEN, TOKEN_CHARS = 1000, 512, 16


def _body(slo) -> CompletionRequest:
    import json
    return validate_body(CompletionRequest, json.dumps({"prompt": "x", "slo": slo}).encode(), VOCAB, MAX_LEN,
                         TOKEN_CHARS)


def test_body_text_and_numbers_give_the_same_bounds():
    assert _body("ttft <= 2s, tpot<=400ms").slo.bounds() == SLO(ttft_s=2.0, tpot_s=0.4)
    assert _body({"expr": "e2e <= 30s", "ttft_ms": 500}).slo.bounds() == SLO(ttft_s=0.5, e2e_s=30.0)
    assert _body({"ttft_ms": 500}).slo.bounds() == SLO(ttft_s=0.5)


@pytest.mark.parametrize("slo, message", [
    ("p99 ttft <= 350ms", "cannot be enforced in scope 'request'"),
    ("memory <= 1.5GB", "memory is a resource of the whole server"),
    ("latency ~ 5", "unknown SLO metric 'latency'"),
    ({"expr": "ttft <= 1s", "ttft_ms": 100}, "ttft is given twice"),
])
def test_body_text_errors_are_400s_naming_the_field(slo, message):
    with pytest.raises(APIError) as err:
        _body(slo)
    assert err.value.status == 400 and err.value.param.startswith("slo") and message in err.value.message


def test_header_text_joins_the_millisecond_headers():
    assert header_slo({"x-slo": "e2e <= 20s", "x-slo-ttft-ms": "3000"}) == SLO(ttft_s=3.0, e2e_s=20.0)
    for headers, message in (({"x-slo": "throughput >= 25 tok/s"}, "scope 'request'"),
                             ({"x-slo": "tpot <= 1s", "x-slo-tpot-ms": "900"}, "tpot is given twice")):
        with pytest.raises(APIError) as err:
            header_slo(headers)
        assert err.value.status == 400 and err.value.param == "x-slo" and message in err.value.message


def test_text_bounds_reach_the_request_and_its_report(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory())) as live:
        r = httpx.post(live.url + "/v1/completions", timeout=30, headers={"x-slo": "ttft <= 3s"},
                       json={"prompt": "hello", "max_tokens": 2, "slo": "tpot <= 400ms, e2e <= 60s"})
        assert r.status_code == 200, r.text
        assert r.json()["slo_report"]["slo"] == {"ttft_ms": 3000.0, "tpot_ms": 400.0, "e2e_ms": 60000.0}
        bad = httpx.post(live.url + "/v1/completions", timeout=30, json={"prompt": "x", "slo": "p99 ttft <= 1s"})
        assert bad.status_code == 400 and "scope 'request'" in bad.json()["error"]["message"]
