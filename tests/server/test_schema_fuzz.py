"""Schemathesis against the real server on its complete OpenAPI schema: bodies generated from the schema
(valid and deliberately invalid ones) give no 5xx, only documented status codes and content types, and
responses that match their schemas; invalid bodies are refused; the server is healthy afterwards.

Bounded so it fits the test suite (the tiny model, max_model_len 128): --max-examples per operation is
SCHEMA_EXAMPLES (environment), 30 by default.
"""
from __future__ import annotations

import os
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.server.helpers import LiveServer, make_state

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import (content_type_conformance, negative_data_rejection,  # noqa: E402
                                 not_a_server_error, response_schema_conformance, status_code_conformance)
from schemathesis.generation import GenerationMode  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(op, mode: GenerationMode, url: str, checks: list) -> Counter:
    """Statuses seen, so the test can show it reached both the engine (200) and the validation (400)."""
    seen: Counter = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        seen[case.call_and_validate(base_url=url, checks=checks, timeout=60).status_code] += 1

    run()
    return seen


def test_schemathesis_finds_no_server_error_or_schema_violation(tiny_loaded_factory):
    loaded = tiny_loaded_factory(max_model_len=128)
    with LiveServer(make_state(loaded, max_waiting=256)) as live:
        schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
        ops = [result.ok() for result in schema.get_all_operations()]
        paths = {(op.method.upper(), op.path) for op in ops}
        assert {("POST", "/v1/completions"), ("POST", "/v1/chat/completions")} <= paths
        for op in ops:
            assert op.method.upper() != "POST" or len(op.body), f"{op.path}: no request body in the schema"
            seen = _fuzz(op, GenerationMode.POSITIVE, live.url, CHECKS)
            if op.method.upper() == "POST":
                seen += _fuzz(op, GenerationMode.NEGATIVE, live.url, CHECKS + [negative_data_rejection])
                print(op.method, op.path, dict(seen))
                assert seen[200] > 0 and seen[400] > 0
        assert httpx.get(live.url + "/health").status_code == 200
        assert not live.scheduler.requests and live.scheduler.kv.num_used_blocks == 0
