"""Structured output through the real `openai` client against a live server on the embedded model: the
answer parses and validates against the requested schema (llguidance masks every token)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.schemas import SCHEMAS

jsonschema = pytest.importorskip("jsonschema")
pytestmark = pytest.mark.slow


def _ask(client, i: int, schema: dict) -> tuple[str, str]:
    resp = client.chat.completions.create(
        model="smol", max_tokens=200, temperature=0, seed=i,
        messages=[{"role": "user", "content": f"Answer with JSON matching this schema: {json.dumps(schema)}"}],
        response_format={"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema}})
    return resp.choices[0].message.content, resp.choices[0].finish_reason


def test_json_schema_output_validates_for_20_schemas(client):
    assert len(SCHEMAS) == 20
    with ThreadPoolExecutor(len(SCHEMAS)) as pool:   # one batch: the grammars share decode steps
        answers = list(pool.map(lambda a: _ask(client, *a), enumerate(SCHEMAS)))
    for schema, (text, reason) in zip(SCHEMAS, answers):
        assert reason == "stop", (schema, text)
        jsonschema.validate(json.loads(text), schema)


def test_unconstrained_answer_is_not_json(client):
    """The control: the same kind of question without a response_format is prose (the grammar did the work)."""
    resp = client.chat.completions.create(model="smol", max_tokens=20, temperature=0,
                                          messages=[{"role": "user", "content": "Describe a cat."}])
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.choices[0].message.content)


def test_json_object_regex_choice_and_grammar(client):
    msgs = [{"role": "user", "content": "Is the sky blue?"}]
    obj = client.chat.completions.create(model="smol", max_tokens=80, temperature=0, messages=msgs,
                                         response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    choice = client.chat.completions.create(model="smol", max_tokens=5, temperature=0.8, seed=1, messages=msgs,
                                            extra_body={"guided_choice": ["yes", "no"]})
    assert choice.choices[0].message.content in ("yes", "no")
    rx = client.completions.create(model="smol", prompt="Year:", max_tokens=8, temperature=0,
                                   extra_body={"structured_outputs": {"regex": "[12][0-9]{3}"}})
    assert len(rx.choices[0].text) == 4 and rx.choices[0].text.isdigit()
    gbnf = client.completions.create(model="smol", prompt="Say:", max_tokens=8, temperature=0,
                                     extra_body={"guided_grammar": 'root ::= "ok" | "no"'})
    assert gbnf.choices[0].text in ("ok", "no")


def test_bad_schema_and_two_constraints_are_400(client):
    import openai

    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="smol", messages=msgs, extra_body={"guided_regex": "(unclosed"})
    assert "grammar" in str(exc.value)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="smol", messages=msgs, response_format={"type": "json_object"},
                                       extra_body={"guided_choice": ["a"]})
    assert exc.value.body["param"] == "guided_choice"


def test_ollama_format_constrains_the_answer(server):
    """Ollama's `format` (a JSON schema, or "json") through the official `ollama` client: the same grammar."""
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=server.url, timeout=600)
    schema = SCHEMAS[0]
    ask = [{"role": "user", "content": f"Answer with JSON matching this schema: {json.dumps(schema)}"}]
    resp = client.chat(model="smol", messages=ask, format=schema, options={"temperature": 0, "num_predict": 200})
    assert resp.done_reason == "stop", resp.message.content
    jsonschema.validate(json.loads(resp.message.content), schema)
    gen = client.generate(model="smol", prompt="Describe a cat as JSON.", format="json",
                          options={"temperature": 0, "num_predict": 200})
    assert gen.done_reason == "stop", gen.response
    assert isinstance(json.loads(gen.response), dict)
