"""API parity with vLLM (issue 19): the model's own chat template, tools and tool_choice,
logit_bias, NUL characters, cache_salt and Authorization conformance.

Runs against `tokenmill serve` with the default model (SmolLM2), whose GGUF template is
rendered by the Jinja interpreter; the golden renders come from
tests/golden/chat_templates.json (made with Python's jinja2)."""
import json
import pathlib
import socket

import openai
import pytest
import requests

from test_api import TIMEOUT, assert_error, chat, client, post

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "tests/golden/chat_templates.json").read_text())
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def golden(template, conversation):
    for c in GOLDEN["cases"]:
        if c["template"] == template and c["conversation"] == conversation:
            return c["expected"]
    raise KeyError((template, conversation))


def tokens(server, text, special=False):
    r = post(server, "/tokenize", {"prompt": text, "add_special_tokens": special})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_the_gguf_template_renders_as_jinja2_does(server):
    # The prompt the server built has exactly the tokens of jinja2's render of SmolLM2's
    # template (which injects a default system turn when there is none).
    for conv in ("single", "system", "multi_turn", "text_edges"):
        msgs = GOLDEN["conversations"][conv]["messages"]
        r = post(server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 1})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(tokens(server, golden("smollm2", conv))), conv


def test_tool_messages_reach_the_template(server):
    # SmolLM2's template prints any role: tool results and assistant tool calls are served
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "content": "22 C", "tool_call_id": "call_1"}]
    r = post(server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 2})
    assert r.status_code == 200, r.text
    want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face" \
           "<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n" \
           "<|im_start|>tool\n22 C<|im_end|>\n<|im_start|>assistant\n"
    assert r.json()["usage"]["prompt_tokens"] == len(tokens(server, want))
    bad = [msgs[0], {"role": "assistant", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]
    assert_error(post(server, "/v1/chat/completions", {"messages": bad}), 400, param="messages")


def test_tool_choice_rules(server):
    base = {"messages": chat("Weather in Paris?"), "max_tokens": 4}
    # SmolLM2's template writes no tool calls: "auto" needs --tool-call-parser (as vLLM)
    assert_error(post(server, "/v1/chat/completions", {**base, "tools": [WEATHER]}), 400,
                 param="tool_choice")
    r = post(server, "/v1/chat/completions", {**base, "tools": [WEATHER], "tool_choice": "none"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["tool_calls"] == []
    assert_error(post(server, "/v1/chat/completions",
                      {**base, "tools": [WEATHER],
                       "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                 400, param="tool_choice")
    assert_error(post(server, "/v1/chat/completions", {**base, "tool_choice": "required"}), 400,
                 param="tool_choice")
    assert_error(post(server, "/v1/chat/completions",
                      {**base, "tools": [{"type": "function", "function": {"parameters": {}}}]}),
                 400, param="tools")


def test_named_tool_choice_through_the_openai_client(server):
    c = client(server)
    kw = dict(model=server.name, messages=chat("Weather in Paris?"), max_tokens=40, temperature=0,
              tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    r = c.chat.completions.create(**kw)
    m = r.choices[0].message
    assert len(m.tool_calls) == 1
    assert m.tool_calls[0].function.name == "get_weather"
    assert m.tool_calls[0].id.startswith("chatcmpl-tool-")
    text = m.tool_calls[0].function.arguments  # the output itself, constrained to the parameters
    json.loads(text)
    calls, finish = {}, None
    for ch in c.chat.completions.create(**kw, stream=True):
        for d in ch.choices[0].delta.tool_calls or []:
            e = calls.setdefault(d.index, {"name": "", "arguments": ""})
            e["name"] += (d.function.name or "") if d.function else ""
            e["arguments"] += (d.function.arguments or "") if d.function else ""
        assert not ch.choices[0].delta.content, "no tool-call text leaks into content"
        finish = ch.choices[0].finish_reason or finish
    assert calls == {0: {"name": "get_weather", "arguments": text}}
    assert finish == r.choices[0].finish_reason == "tool_calls"


def test_logit_bias_shapes_sampling_on_both_endpoints(server):
    target = tokens(server, " banana")[-1]
    for path, body in (("/v1/completions", {"prompt": "The capital of France is"}),
                       ("/v1/chat/completions", {"messages": chat("Name a city.")})):
        r = post(server, path, {**body, "max_tokens": 5, "temperature": 0, "ignore_eos": True,
                                "logit_bias": {str(target): 100}})
        assert r.status_code == 200, r.text
        out = r.json()["choices"][0]
        text = out["text"] if "text" in out else out["message"]["content"]
        assert text == " banana" * 5, text
        # sampled as well: with +100 nothing else has a chance
        r = post(server, path, {**body, "max_tokens": 3, "temperature": 1.0, "seed": 3,
                                "ignore_eos": True, "logit_bias": {str(target): 100}})
        out = r.json()["choices"][0]
        assert (out["text"] if "text" in out else out["message"]["content"]) == " banana" * 3
    # -100 removes the greedy choice
    free = post(server, "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 1,
                                            "temperature": 0}).json()
    first = tokens(server, free["choices"][0]["text"])[0]
    r = post(server, "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 1,
                                         "temperature": 0, "logit_bias": {str(first): -100}})
    assert r.json()["choices"][0]["text"] != free["choices"][0]["text"]
    assert_error(post(server, "/v1/completions", {"prompt": "x", "logit_bias": {"999999": 1}}), 400,
                 param="logit_bias")


def test_nul_characters_are_text(server):
    r = post(server, "/tokenize", {"prompt": "a\u0000b"})
    assert r.status_code == 200, r.text
    assert "JSON_ALLOW_NUL" not in r.text
    n = r.json()["count"]
    assert n >= 3
    r = post(server, "/v1/completions", {"prompt": "a\u0000b", "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == n


def test_empty_cache_salt_is_refused(server):
    assert_error(post(server, "/v1/completions", {"prompt": "x", "cache_salt": ""}), 400,
                 param="cache_salt")
    r = post(server, "/v1/completions", {"prompt": "x", "max_tokens": 1, "cache_salt": "t"})
    assert r.status_code == 200, r.text


def test_repeated_authorization_header_is_refused(make_server):
    s = make_server("--api-key", "sekret-key")
    host, port = s.url.split("//")[1].split(":")
    body = b'{"prompt": "x", "max_tokens": 1}'
    for auths in ((b"Bearer wrong", b"Bearer sekret-key"), (b"Bearer sekret-key", b"Bearer sekret-key")):
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            req = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            for a in auths:
                req += b"Authorization: " + a + b"\r\n"
            req += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            sock.sendall(req)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 400"), data[:200]
        assert b"Authorization" in data
    ok = requests.post(s.url + "/v1/completions", data=body, timeout=TIMEOUT,
                       headers={"Authorization": "Bearer sekret-key", "Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_vllm_request_histograms(server):
    from test_api import metrics
    before = metrics(server)[1]
    r = post(server, "/v1/completions", {"prompt": "Count: 1 2 3", "max_tokens": 4, "ignore_eos": True})
    assert r.status_code == 200, r.text
    after = metrics(server)[1]
    for name in ("request_queue_time_seconds", "request_prefill_time_seconds",
                 "request_decode_time_seconds", "request_inference_time_seconds",
                 "request_prompt_tokens", "request_generation_tokens"):
        key = f"tokenmill:{name}_count"
        assert after[key][0] == before.get(key, [0])[0] + 1, name
    gen = "tokenmill:request_generation_tokens_sum"
    assert after[gen][0] - before.get(gen, [0])[0] == 4


def test_n_choices_share_the_prompt_and_count_it_once(server):
    from test_api import metrics
    prompt = "Write one short sentence about the sea. " * 8  # several full KV pages
    one = post(server, "/v1/completions", {"prompt": prompt + "(single)", "max_tokens": 6,
                                           "temperature": 1.0, "seed": 11}).json()
    hits0 = metrics(server)[1]["tokenmill:prefix_cache_hits_total"][0]
    body = {"prompt": prompt + "(n)", "max_tokens": 6, "temperature": 1.0, "seed": 11, "n": 3,
            "ignore_eos": True}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in out["choices"]}) > 1, "choices differ by seed"
    u = out["usage"]
    assert u["prompt_tokens"] == one["usage"]["prompt_tokens"]  # the prompt, once
    assert u["completion_tokens"] == 18
    assert u["total_tokens"] == u["prompt_tokens"] + 18
    # the choices after the first found the prompt's full pages in the prefix cache
    hits = metrics(server)[1]["tokenmill:prefix_cache_hits_total"][0] - hits0
    assert hits >= 2 * (u["prompt_tokens"] // 16) * 16 - 16, hits
    # the same seed gives the same choices
    again = post(server, "/v1/completions", body).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in out["choices"]]
    assert_error(post(server, "/v1/completions", {"prompt": "x", "n": 129}), 400, param="n")


def test_n_choices_stream_through_the_openai_client(server):
    c = client(server)
    texts, finishes, usage, n_role = {}, {}, None, 0
    for ch in c.chat.completions.create(model=server.name, messages=chat("Say hi."), n=2,
                                        max_tokens=5, temperature=1.0, seed=5, stream=True,
                                        stream_options={"include_usage": True}):
        if ch.usage:
            usage = ch.usage
        for choice in ch.choices:
            if choice.delta.role:
                n_role += 1
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert n_role == 2 and set(texts) == {0, 1} and set(finishes) == {0, 1}
    assert usage is not None
    full = c.chat.completions.create(model=server.name, messages=chat("Say hi."), n=2, max_tokens=5,
                                     temperature=1.0, seed=5)
    assert [ch.message.content for ch in full.choices] == [texts[0], texts[1]]
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.completion_tokens == full.usage.completion_tokens


def test_n_choices_each_follow_the_grammar(server):
    # structured output with n > 1: every choice walks the grammar on its own
    r = post(server, "/v1/chat/completions",
             {"messages": chat("Give me a JSON object."), "n": 3, "max_tokens": 24, "temperature": 1.0,
              "seed": 7, "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    out = r.json()["choices"]
    assert [c["index"] for c in out] == [0, 1, 2]
    for c in out:
        text = c["message"]["content"]
        if c["finish_reason"] == "stop":
            json.loads(text)  # a complete object
        else:
            assert text.lstrip().startswith("{"), text
