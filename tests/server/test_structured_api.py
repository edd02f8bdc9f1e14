"""Structured output through the official openai client against a real tokenmill serve.

- client.chat.completions.parse with a Pydantic model returns the parsed object;
- a representative 30-schema subset of the corpus (scripts/structured_corpus.py runs all
  of it), greedy and sampled: every output that stops parses and validates, refused
  schemas get a 400 naming the feature;
- vLLM's structured_outputs (choice, regex, grammar, json) and guided_* fields, streaming,
  and /v1/completions;
- a new grammar compiles off the loop thread: other requests are answered meanwhile, and a
  client that leaves or a shutdown during the compile is handled, and a burst of requests
  with the same new grammar compiles it once.
"""
import concurrent.futures
import http.client
import json
import select
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pydantic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import structured_corpus  # noqa: E402
from conftest import parse_metrics  # noqa: E402


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


# ---- a grammar compiling off the loop thread ----

def slow_schema(tag):
    """A schema that takes a large part of a second to compile over SmolLM2's vocabulary
    (bounded strings walk the vocabulary at every position); tag keeps it out of the cache."""
    n = 6
    props = {f"{tag}{i}": {"type": "string", "maxLength": 40 + i} for i in range(n)}
    return {"type": "object", "properties": props, "required": list(props)}


def stream_body(server, schema):
    return json.dumps({"model": server.name, "messages": ask("Fill in the form."), "max_tokens": 8,
                       "stream": True, "temperature": 0,
                       "response_format": {"type": "json_schema", "json_schema": {"name": "form", "schema": schema}}})


def test_a_compiling_grammar_does_not_hold_up_other_requests(server):
    """While one request's new grammar compiles, the loop thread keeps answering: /health
    comes back before that request's stream has even begun (when the compile ran on the loop
    thread, /health waited for all of it)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=stream_body(server, slow_schema("hold")),
                 headers={"Content-Type": "application/json"})
    time.sleep(0.05)  # the request is in the server's hands
    h = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    h.request("GET", "/health")
    assert h.getresponse().status == 200
    # nothing of the structured stream yet: its headers leave once the grammar is compiled
    # (compiled on the loop thread, they left before /health was even read)
    readable, _, _ = select.select([conn.sock], [], [], 0)
    assert not readable, "the structured stream began before /health was answered"
    r = conn.getresponse()
    body = r.read().decode()
    assert r.status == 200, body
    assert "data: [DONE]" in body
    h.close()
    conn.close()


def test_a_client_gone_while_its_grammar_compiles(server):
    """The client leaves during the compile: nothing is answered to it, the server stays up,
    and the same schema afterwards (compiled meanwhile) runs to a valid answer."""
    schema = slow_schema("gone")
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = stream_body(server, schema).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.05)
    s.close()
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=120, max_retries=0)
    r = c.chat.completions.create(model=server.name, messages=ask("Fill in the form."), max_tokens=200,
                                  temperature=0, response_format={"type": "json_schema", "json_schema":
                                                                  {"name": "form", "schema": schema}})
    if r.choices[0].finish_reason == "stop":
        obj = json.loads(r.choices[0].message.content)
        assert set(obj) == set(schema["properties"])


def test_shutdown_while_a_grammar_compiles(make_server):
    """SIGTERM during a compile: the request gets an answer or a closed connection, and the
    server exits cleanly once the compile is done."""
    srv = make_server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=stream_body(srv, slow_schema("stop")),
                 headers={"Content-Type": "application/json"})
    time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    try:
        status = conn.getresponse().status
        assert status in (200, 503), status
    except (http.client.HTTPException, ConnectionError):
        pass  # closed by the shutdown
    assert srv.proc.wait(timeout=60) == 0, srv.log()


def test_a_burst_with_one_new_grammar_compiles_it_once(server):
    """Requests that bring the same new grammar while it compiles wait for that compile:
    one compile, every request answered (and each then finds the grammar in the cache)."""
    def grammar_metrics():
        samples, _ = parse_metrics(urllib.request.urlopen(server.url + "/metrics", timeout=30).read().decode())
        get = lambda name: next(v for k, v in samples.items() if k.startswith(f"tokenmill:{name}{{"))
        return get("grammar_compiles_total"), get("grammar_cache_hits_total")

    schema = slow_schema("burst")
    compiles0, hits0 = grammar_metrics()
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=120, max_retries=0)

    def ask_form(_):
        r = c.chat.completions.create(model=server.name, messages=ask("Fill in the form."), max_tokens=8,
                                      temperature=0, response_format={"type": "json_schema", "json_schema":
                                                                      {"name": "form", "schema": schema}})
        return r.choices[0].finish_reason

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        reasons = list(pool.map(ask_form, range(6)))
    assert all(r in ("stop", "length") for r in reasons), reasons
    compiles, hits = grammar_metrics()
    assert compiles - compiles0 == 1
    assert hits - hits0 >= 6
