"""Property tests on request validation (sliceserve.server.intake.validate_body): whatever JSON arrives
(NaN, infinities, subnormals, huge integers, lone surrogates, deep nesting, wrong types), the answer is a
checked body whose every sampling value the sampler can use, or an APIError 400 naming the problem;
never another exception (which the server would turn into a 500)."""
from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings, strategies as st

from sliceserve.server.intake import validate_body
from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest
from sliceserve.server.validation import GREEDY_BELOW, SEED_LIMIT

VOCAB, MAX_LEN, TOKEN_CHARS = 1000, 512, 16

nasty_floats = st.sampled_from([math.nan, math.inf, -math.inf, 5e-324, -5e-324, 1e-300, 1e308, -0.0, 0.0,
                                2.0, 1e-6, 1e-5, 0.5]) | st.floats(allow_nan=True, allow_infinity=True)
nasty_ints = st.sampled_from([-1, 0, 1, 2 ** 63, -(2 ** 63), 10 ** 30, 10 ** 400, VOCAB, VOCAB - 1]) | st.integers()
nasty_text = st.sampled_from(["\ud800", "x\udfffy", "", "ok", "é" * 3]) | st.text(max_size=20)
scalars = nasty_floats | nasty_ints | nasty_text | st.booleans() | st.none()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
                      max_leaves=10)
FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids",
          "ignore_eos", "n", "stream", "slo", "slo_class", "utility", "priority", "frequency_penalty",
          "presence_penalty", "messages", "max_completion_tokens", "stream_options")
SLO = st.fixed_dictionaries({}, optional={"ttft_ms": nasty_floats | nasty_ints, "tpot_ms": nasty_floats,
                                          "e2e_ms": nasty_floats | nasty_ints})
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8) | st.fixed_dictionaries(
    {"prompt": st.just("hi") | nasty_text},
    optional={"temperature": nasty_floats | nasty_ints, "top_k": nasty_ints | nasty_floats, "seed": nasty_ints,
              "top_p": nasty_floats, "stop_token_ids": st.lists(nasty_ints, max_size=3), "slo": SLO,
              "frequency_penalty": nasty_floats | nasty_ints, "max_tokens": nasty_ints | nasty_floats})


def _encode(body: object) -> bytes:
    # json.dumps writes NaN/Infinity (Python's JSON accepts them) and escapes lone surrogates as \\ud800.
    return json.dumps(body).encode()


def _check(model, raw: bytes) -> None:
    try:
        body = validate_body(model, raw, VOCAB, MAX_LEN, TOKEN_CHARS)
    except APIError as err:
        assert err.status == 400, err.message
        assert err.message
        return
    assert math.isfinite(body.temperature) and body.temperature >= 0
    assert body.temperature == 0.0 or body.temperature >= GREEDY_BELOW     # never a sampler-breaking scale
    assert 0 < body.top_p <= 1 and 0 <= body.top_k <= VOCAB
    assert body.seed is None or 0 <= body.seed < SEED_LIMIT
    assert all(0 <= t < VOCAB for t in body.stop_token_ids or ())
    if body.slo is not None:
        for v in (body.slo.ttft_ms, body.slo.tpot_ms, body.slo.e2e_ms):
            assert v is None or (math.isfinite(v) and v / 1e3 > 0)
    assert body.utility is None or math.isfinite(body.utility)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_completion_body_is_checked_or_a_400(body):
    _check(CompletionRequest, _encode(body))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
       st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "bogus"]),
                                        "content": nasty_text | values}), max_size=3))
def test_any_chat_body_is_checked_or_a_400(body, messages):
    _check(ChatRequest, _encode({**body, "messages": messages}))


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=100_000), st.sampled_from([("[", "]"), ('{"a":', "}")]))
def test_deep_nesting_is_a_400(depth, brackets):
    opener, closer = brackets
    raw = ('{"prompt": "x", "stop": ' + opener * depth + "1" + closer * depth + "}").encode()
    _check(CompletionRequest, raw)
    _check(ChatRequest, ('{"messages": [{"role": "user", "content": [' + opener * depth + "1" + closer * depth
                         + "]}]}").encode())


def test_the_issues_inputs_are_400s_naming_the_field():
    cases = {"top_k": {"prompt": "x", "top_k": 1e30}, "seed": {"prompt": "x", "seed": -1},
             "stop_token_ids[0]": {"prompt": "x", "stop_token_ids": [-1]},
             "temperature": {"prompt": "x", "temperature": math.inf},
             "frequency_penalty": {"prompt": "x", "frequency_penalty": 1e9},
             "slo.ttft_ms": {"prompt": "x", "slo": {"ttft_ms": 5e-324}}, "prompt": {"prompt": "\ud800"}}
    for param, body in cases.items():
        try:
            validate_body(CompletionRequest, _encode(body), VOCAB, MAX_LEN, TOKEN_CHARS)
        except APIError as err:
            assert err.status == 400 and (err.param or "").startswith(param.split("[")[0]), (param, err.message)
        else:
            raise AssertionError(f"{body} accepted")
    for raw in (b'{"prompt": "x", "slo": {"ttft_ms": 1e309}}', b'{"prompt": "x", "slo": {"ttft_ms": Infinity}}',
                b'{"prompt": "x", "temperature": NaN}'):
        try:
            validate_body(CompletionRequest, raw, VOCAB, MAX_LEN, TOKEN_CHARS)
        except APIError as err:
            assert err.status == 400 and err.param in ("slo.ttft_ms", "temperature")
        else:
            raise AssertionError(f"{raw} accepted")


def test_tiny_temperature_is_greedy_and_a_long_prompt_is_refused_before_tokenising():
    body = validate_body(CompletionRequest, b'{"prompt": "x", "temperature": 1e-300}', VOCAB, MAX_LEN, TOKEN_CHARS)
    assert body.temperature == 0.0
    assert validate_body(CompletionRequest, b'{"prompt": "x", "temperature": 0.5}', VOCAB, MAX_LEN,
                         TOKEN_CHARS).temperature == 0.5
    long_prompt = _encode({"prompt": "a" * (MAX_LEN * TOKEN_CHARS + 1)})
    try:
        validate_body(CompletionRequest, long_prompt, VOCAB, MAX_LEN, TOKEN_CHARS)
    except APIError as err:
        assert err.status == 400 and err.code == "context_length_exceeded"
    else:
        raise AssertionError("over-long prompt accepted")
