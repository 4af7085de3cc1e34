"""Walk server/fields.py's table against a live server: every supported field is honoured (200 with the
example value), every rejected one answers 400 naming it, an unknown field too; docs/SERVER.md carries
the same table."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sliceserve.server.fields import FIELDS, markdown_table
from tests.server.helpers import LiveServer, make_state

BASE = {"chat": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        "completions": {"prompt": "hi", "max_tokens": 3}}
PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
CASES = [(f, ep) for f in FIELDS for ep in f.endpoints if f.example is not None]


@pytest.fixture(scope="module")
def live(tiny_loaded_factory):
    with LiveServer(make_state(tiny_loaded_factory())) as srv:
        yield srv


def test_docs_carry_the_table():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "SERVER.md").read_text()
    assert markdown_table() in docs


@pytest.mark.parametrize("field,endpoint", CASES, ids=[f"{ep}:{f.name}" for f, ep in CASES])
def test_field(live, field, endpoint):
    body = {**BASE[endpoint], **(field.needs or {}), field.name: field.example}
    r = httpx.post(live.url + PATH[endpoint], json=body, timeout=60)
    if field.supported:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == field.name and field.name in err["message"]
        for ok in field.accepted:      # the default (asking for nothing) is fine
            assert httpx.post(live.url + PATH[endpoint], json={**BASE[endpoint], field.name: ok},
                              timeout=60).status_code == 200


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_unknown_and_wrong_endpoint_fields_are_400(live, endpoint):
    r = httpx.post(live.url + PATH[endpoint], json={**BASE[endpoint], "frobnicate": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "frobnicate"
    other = next(f for f in FIELDS if f.endpoints == (("completions",) if endpoint == "chat" else ("chat",)))
    r = httpx.post(live.url + PATH[endpoint], json={**BASE[endpoint], other.name: other.example})
    assert r.status_code == 400 and r.json()["error"]["param"] == other.name


def test_restricted_values_of_supported_fields_are_400(live):
    for field, value in (("store", True), ("modalities", ["audio"]), ("service_tier", "flex")):
        r = httpx.post(live.url + PATH["chat"], json={**BASE["chat"], field: value})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith(field), (field, r.text)
