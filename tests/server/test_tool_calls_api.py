"""Forced tool calls, constrained by grammar, through the official openai client against a
real tokenmill serve (the default SmolLM2 model, with --tool-call-parser hermes: its own
template shows no tool-call format).

- tool_choice naming a function: the reply is that function's arguments, valid against
  its parameters schema; streamed as argument fragments after a first delta that names it;
- tool_choice "required": the reply is Hermes <tool_call> blocks of listed functions, read
  back by the parser (streamed arguments in fragments too); one call with
  parallel_tool_calls false;
- both streaming and not: finish_reason "tool_calls", no markup in content;
- a function marked strict under "auto" is held to its schema when the model calls it;
- a forced function whose schema uses an unsupported feature is a 400 naming it.
"""
import json

import jsonschema
import openai
import pytest

from conftest import WEATHER, Server

BOOK = {"type": "function", "function": {
    "name": "book_table", "description": "Book a table at a restaurant",
    "parameters": {"type": "object", "$defs": {"Party": {"type": "object", "properties": {
        "size": {"type": "integer", "minimum": 1, "maximum": 12},
        "names": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3}},
        "required": ["size", "names"], "additionalProperties": False}},
        "properties": {"restaurant": {"type": "string", "maxLength": 30},
                       "party": {"$ref": "#/$defs/Party"},
                       "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}},
        "required": ["restaurant", "party", "time"], "additionalProperties": False}}}
TOOLS = [WEATHER, BOOK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MARKUP = ("<tool_call>", "</tool_call>", '"name"', '"arguments"')
QUESTIONS = ["What's the weather like in Paris?", "Book a table for two at Luigi's at 19:30, for Ann and Bob."]


@pytest.fixture(scope="module")
def hermes(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("tools"), "--tool-call-parser", "hermes", "--kv-cache-mem", "128")
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def client(hermes):
    return openai.OpenAI(base_url=hermes.url + "/v1", api_key="none", timeout=300, max_retries=0)


def create(client, server, question, tool_choice, **kw):
    kw.setdefault("max_tokens", 200)
    return client.chat.completions.create(model=server.name, messages=[{"role": "user", "content": question}],
                                          tools=TOOLS, tool_choice=tool_choice, **kw)


def check_call(name, arguments, allowed):
    assert name in allowed, name
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def streamed(client, server, question, tool_choice, **kw):
    """The stream folded as a client does: content, calls by index, finish_reason; checks
    that each call's first delta carries id, type and name, and later ones only arguments."""
    content, calls, finish = "", {}, None
    for chunk in create(client, server, question, tool_choice, stream=True, **kw):
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        content += ch.delta.content or ""
        for d in ch.delta.tool_calls or []:
            if d.index not in calls:
                assert d.id and d.type == "function" and d.function.name, d
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": d.function.arguments or "",
                                  "deltas": 1}
            else:
                assert d.id is None and (d.function.name or None) is None, d
                calls[d.index]["arguments"] += d.function.arguments or ""
                calls[d.index]["deltas"] += 1
        finish = ch.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("temperature", [0, 1.0])
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("forced", ["get_weather", "book_table"])
def test_named_tool_choice_gives_valid_arguments(client, hermes, forced, question, temperature):
    choice = {"type": "function", "function": {"name": forced}}
    r = create(client, hermes, question, choice, temperature=temperature, seed=7)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", ch
    assert len(ch.message.tool_calls) == 1
    call = ch.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("chatcmpl-tool-")
    args = check_call(call.function.name, call.function.arguments, {forced})
    assert not ch.message.content
    # streamed: the same arguments (same seed), in fragments as they are generated
    content, calls, finish = streamed(client, hermes, question, choice, temperature=temperature, seed=7)
    assert finish == "tool_calls"
    assert content == ""
    assert len(calls) == 1 and calls[0]["name"] == forced
    assert json.loads(calls[0]["arguments"]) == args
    assert calls[0]["deltas"] > 2, "arguments arrive as they are generated"


@pytest.mark.parametrize("temperature", [0, 1.0])
@pytest.mark.parametrize("question", QUESTIONS)
def test_required_gives_one_valid_call_of_a_listed_function(client, hermes, question, temperature):
    kw = dict(temperature=temperature, seed=11, parallel_tool_calls=False)
    r = create(client, hermes, question, "required", **kw)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", ch
    assert len(ch.message.tool_calls) == 1
    call = ch.message.tool_calls[0]
    args = check_call(call.function.name, call.function.arguments, set(SCHEMAS))
    assert not ch.message.content
    content, calls, finish = streamed(client, hermes, question, "required", **kw)
    assert finish == "tool_calls"
    assert content == "" and not any(m in content for m in MARKUP)
    assert len(calls) == 1 and calls[0]["name"] == call.function.name
    assert calls[0]["arguments"] == call.function.arguments  # the same text, in fragments
    assert calls[0]["deltas"] > 2, "arguments arrive as they are generated"


def test_required_with_parallel_calls_gives_only_valid_calls(client, hermes):
    # The small model repeats calls until max_tokens: every complete call is valid, the cut
    # one is dropped, and finish_reason says why it ended.
    for temperature in (0, 1.0):
        r = create(client, hermes, QUESTIONS[0], "required", temperature=temperature, seed=5, max_tokens=120)
        ch = r.choices[0]
        assert ch.finish_reason in ("tool_calls", "length"), ch
        assert len(ch.message.tool_calls) >= 1
        for call in ch.message.tool_calls:
            check_call(call.function.name, call.function.arguments, set(SCHEMAS))
        assert not ch.message.content
        assert len({c.id for c in ch.message.tool_calls}) == len(ch.message.tool_calls)
        content, calls, finish = streamed(client, hermes, QUESTIONS[0], "required", temperature=temperature,
                                          seed=5, max_tokens=120)
        assert content == "" and finish == ch.finish_reason
        done = ch.message.tool_calls
        # a stream cut by max_tokens has also sent the head and first arguments of the cut call
        assert len(calls) in (len(done), len(done) + (finish == "length"))
        assert [(c["name"], json.loads(c["arguments"])) for c in calls[:len(done)]] == \
               [(c.function.name, json.loads(c.function.arguments)) for c in done]


def test_strict_function_under_auto_is_held_to_its_schema(client, hermes):
    # Two earlier turns show the model the Hermes markup, so it calls on its own (without
    # strict it then writes units like "metres"). With strict every call validates, and
    # the text never holds the markup. Sampled, several seeds, bounded.
    strict = json.loads(json.dumps(WEATHER))
    strict["function"]["strict"] = True
    shot = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "%s", "unit": "celsius"}}\n</tool_call>'
    msgs = [{"role": "user", "content": "What's the weather in Rome?"}, {"role": "assistant", "content": shot % "Rome"},
            {"role": "user", "content": "What's the weather in Oslo?"}, {"role": "assistant", "content": shot % "Oslo"},
            {"role": "user", "content": "What's the weather in Paris?"}]
    n_calls = 0
    for seed in range(6):
        kw = dict(model=hermes.name, messages=msgs, tools=[strict], temperature=1.0, seed=seed, max_tokens=80)
        r = client.chat.completions.create(**kw)
        m = r.choices[0].message
        assert "<tool_call>" not in (m.content or "")
        for call in m.tool_calls or []:
            check_call(call.function.name, call.function.arguments, {"get_weather"})
        n_calls += bool(m.tool_calls)
        if m.tool_calls:
            assert r.choices[0].finish_reason == "tool_calls"
        content, calls = "", {}
        for chunk in client.chat.completions.create(**kw, stream=True):
            d = chunk.choices[0].delta
            content += d.content or ""
            for t in d.tool_calls or []:
                calls[t.index] = calls.get(t.index, "") + ((t.function.arguments or "") if t.function else "")
        assert "<tool_call>" not in content
        assert [json.loads(a) for a in calls.values()] == [json.loads(c.function.arguments) for c in m.tool_calls or []]
    assert n_calls >= 3, "the model called the tool too rarely for the test to mean anything"


def test_unsupported_schema_feature_in_a_forced_tool_is_a_400_naming_it(client, hermes):
    bad = {"type": "function", "function": {"name": "tag", "parameters": {
        "type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
        "required": ["tags"]}}}
    for choice in ({"type": "function", "function": {"name": "tag"}}, "required"):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=hermes.name, messages=[{"role": "user", "content": "tag it"}],
                                           tools=[bad, WEATHER], tool_choice=choice, max_tokens=20)
        assert e.value.status_code == 400
        assert "uniqueItems" in e.value.message and "'tag'" in e.value.message, e.value.message
        assert e.value.body["param"] == "tools"
    # a function that is not forced and not strict keeps its schema unchecked (nothing constrains it)
    r = client.chat.completions.create(model=hermes.name, messages=[{"role": "user", "content": "tag it"}],
                                       tools=[bad, WEATHER], tool_choice={"type": "function",
                                                                          "function": {"name": "get_weather"}},
                                       max_tokens=60, temperature=0)
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    # an unknown function keeps its own 400
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=hermes.name, messages=[{"role": "user", "content": "x"}], tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"
