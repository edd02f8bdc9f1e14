"""Structured output through the official openai client against a real tokenmill serve.

- client.chat.completions.parse with a Pydantic model returns the parsed object;
- a representative 30-schema subset of the corpus (scripts/structured_corpus.py runs all
  of it), greedy and sampled: every output that stops parses and validates, refused
  schemas get a 400 naming the feature;
- vLLM's structured_outputs (choice, regex, grammar, json) and guided_* fields, streaming,
  and /v1/completions.
"""
import json
import sys
from pathlib import Path

import openai
import pydantic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import structured_corpus  # noqa: E402


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=600, max_retries=0)


def ask(text):
    return [{"role": "user", "content": text}]


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_parse_returns_the_pydantic_object(client, server):
    r = client.chat.completions.parse(model=server.name, messages=ask("My name is Cameron, I'm 28. Reply as JSON."),
                                      response_format=Person, temperature=0, max_tokens=80)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop", msg.content
    assert isinstance(msg.parsed, Person), msg.content
    assert Person.model_validate_json(msg.content) == msg.parsed


def test_corpus_subset_outputs_validate_and_refusals_name_the_feature(server):
    results = structured_corpus.run_corpus(server.url, server.name, subset=30, max_tokens=160, concurrency=8)
    fails = [r for r in results if r["verdict"].startswith("FAIL")]
    assert not fails, "\n".join(f"{r['name']} {r['mode']}: {r['verdict']} {r.get('text', '')[:200]!r}" for r in fails)
    verdicts = [r["verdict"] for r in results]
    assert verdicts.count("refused") >= 2
    assert verdicts.count("valid") >= len(results) // 2, structured_corpus.summarize(results)[0]


def test_vllm_structured_outputs_and_guided_fields(client, server):
    def content(**extra):
        r = client.chat.completions.create(model=server.name, messages=ask("Is water wet? Answer."),
                                           max_tokens=30, temperature=0, extra_body=extra)
        return r.choices[0].message.content, r.choices[0].finish_reason

    assert content(structured_outputs={"choice": ["yes", "no"]})[0] in ("yes", "no")
    assert content(guided_choice=["maybe", "never"])[0] in ("maybe", "never")
    text, _ = content(structured_outputs={"regex": "[0-9]{3}-[0-9]{4}"})
    assert len(text) == 8 and text[3] == "-" and (text[:3] + text[4:]).isdigit(), text
    text, _ = content(structured_outputs={"grammar": 'root ::= "SELECT " col " FROM t"\ncol ::= "a" | "b"'})
    assert text in ("SELECT a FROM t", "SELECT b FROM t")
    text, fin = content(structured_outputs={"json": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                                                     "required": ["ok"]}, "disable_any_whitespace": True})
    assert fin == "stop" and json.loads(text) in ({"ok": True}, {"ok": False}) and " " not in text, text


def test_streaming_deltas_join_into_a_valid_document(client, server):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    stream = client.chat.completions.create(
        model=server.name, messages=ask("A city and its population, as JSON."), max_tokens=80, temperature=0.7,
        seed=3, stream=True, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    text, finish = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop", text
    assert structured_corpus.validate(text, schema) == "valid", text


def test_completions_endpoint_and_json_object(client, server):
    r = client.completions.create(model=server.name, prompt="A JSON object with a key 'a':", max_tokens=60,
                                  temperature=0, extra_body={"response_format": {"type": "json_object"}})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].text), dict), r.choices[0].text
    else:  # the text so far must still be able to become an object
        assert r.choices[0].text.startswith("{"), r.choices[0].text


def test_unsupported_or_malformed_constraints_are_400_naming_them(client, server):
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "array", "items": {"type": "string"}, "uniqueItems": True}}}},
         "uniqueItems", "response_format.json_schema.schema"),
        ({"extra_body": {"structured_outputs": {"regex": "a(?=b)"}}}, "lookaround", "structured_outputs.regex"),
        ({"extra_body": {"structured_outputs": {"grammar": "root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\""}}},
         "left-recursive", "structured_outputs"),
        ({"extra_body": {"structured_outputs": {"choice": ["a"], "regex": "b"}}}, "one constraint", "structured_outputs"),
        ({"response_format": {"type": "json_object"}, "extra_body": {"ignore_eos": True}}, "ignore_eos", "ignore_eos"),
    ]
    for kw, what, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=server.name, messages=ask("x"), max_tokens=5, **kw)
        assert what in str(e.value), (kw, str(e.value))
        assert e.value.body.get("param") == param, (kw, e.value.body)
