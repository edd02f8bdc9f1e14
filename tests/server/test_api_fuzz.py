"""Adversarial input against the HTTP API: wrong JSON types for every field, boundary
values, malformed JSON, odd prompts and messages, raw HTTP oddities, and abuse from many
clients at once. Bad input always gets a 4xx OpenAI error body naming the field, never a
crash, a hang, a 5xx or a sanitizer report; the server stays up after every test.

Every loop is bounded and every read has a deadline; only 127.0.0.1 is used.
Run: TM_BIN=build/tokenmill .venv/bin/python -m pytest tests/server/test_api_fuzz.py -q
"""
import json
import random
import socket
import threading
import time

import openai
import pytest
import requests

from conftest import parse_metrics

TIMEOUT = 60
C, CH = "/v1/completions", "/v1/chat/completions"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.fixture(autouse=True)
def server_survives(server):
    """After each test: the session server still answers and has reported no sanitizer
    error (a sanitized build stops at the first one, so this names the test to blame)."""
    yield
    assert server.proc.poll() is None, f"server died: {server.log()}"
    assert requests.get(server.url + "/health", timeout=TIMEOUT).status_code == 200
    log = server.log_path.read_text(errors="replace")
    for mark in SANITIZER_MARKS:
        assert mark not in log, log[log.index(mark) - 200:][:3000]


def post(server, path, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    h = {"Content-Type": "application/json", **(headers or {})}
    return requests.post(server.url + path, data=data, headers=h, timeout=TIMEOUT)


def assert_error(r, status, param=None, needle=None):
    """r is an OpenAI error object with this status (and param, and text in its message)."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"] and err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param, err
    if needle is not None:
        assert needle in err["message"], err
    return err


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=TIMEOUT,
                         max_retries=0)


def base(path):
    if path == C:
        return {"prompt": "Hi", "max_tokens": 2, "temperature": 0}
    return {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


# ---- every field with every wrong JSON type ----

WRONG = {
    "int": ["5", 1.5, -0.0, 1e30, True, [1], {"a": 1}],
    "float": ["0.5", True, [0.5], {"v": 1}],
    "bool": [1, 0, "true", [True], {"a": True}],
    "str": [5, 1.5, True, ["x"], {"a": "x"}],
}
FIELDS = {  # field: (kind, endpoints)
    "max_tokens": ("int", (C, CH)), "max_completion_tokens": ("int", (C, CH)),
    "n": ("int", (C, CH)), "best_of": ("int", (C, CH)), "top_k": ("int", (C, CH)),
    "seed": ("int", (C, CH)), "logprobs": ("int", (C,)), "top_logprobs": ("int", (CH,)),
    "temperature": ("float", (C, CH)), "top_p": ("float", (C, CH)), "min_p": ("float", (C, CH)),
    "presence_penalty": ("float", (C, CH)), "frequency_penalty": ("float", (C, CH)),
    "repetition_penalty": ("float", (C, CH)),
    "stream": ("bool", (C, CH)), "ignore_eos": ("bool", (C, CH)), "echo": ("bool", (C, CH)),
    "model": ("str", (C, CH)), "user": ("str", (C, CH)), "cache_salt": ("str", (C, CH)),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_wrong_type_for_every_field_is_400_naming_it(server, field):
    kind, paths = FIELDS[field]
    for path in paths:
        for value in WRONG[kind]:
            if kind == "int" and field == "logprobs" and isinstance(value, bool):
                continue  # legacy completions accept a boolean logprobs
            body = {**base(path), field: value}
            if field == "top_logprobs":
                body["logprobs"] = True
            assert_error(post(server, path, body), 400, param=field, needle=field)


BOUNDS = [  # (field, value, endpoint)
    ("max_tokens", 0, C), ("max_tokens", -1, CH), ("max_tokens", 2**31, C),
    ("max_tokens", 2**63 - 1, CH), ("max_tokens", -2**63, C),
    ("max_completion_tokens", 0, CH), ("temperature", -1, C), ("temperature", 1e30, CH),
    ("temperature", -1e-40, C), ("top_p", 0, C), ("top_p", 1.5, CH), ("top_p", -0.0, C),
    ("top_k", -5, C), ("top_k", 2**31, CH), ("min_p", 1.01, C), ("min_p", -0.1, CH),
    ("presence_penalty", 2.5, C), ("frequency_penalty", -3, CH),
    ("repetition_penalty", 0, C), ("repetition_penalty", -0.0, CH),
    ("repetition_penalty", 1e30, C), ("n", 129, C), ("n", 0, CH), ("n", 2**40, C),
    ("best_of", 2, C), ("logprobs", 21, C), ("logprobs", -1, C), ("logprobs", 2**40, C),
    ("top_logprobs", 21, CH), ("top_logprobs", -1, CH), ("seed", 1.5, C),
]


@pytest.mark.parametrize("field,value,path", BOUNDS)
def test_out_of_range_values_are_400_naming_the_field(server, field, value, path):
    body = {**base(path), field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    assert_error(post(server, path, body), 400, param=field, needle=field)


def test_edge_values_that_are_valid(server):
    """Extremes inside the documented ranges are served, not refused or crashed on."""
    for path, extra in [(C, {"seed": -1}), (C, {"seed": 2**63 - 1}), (CH, {"seed": -2**63}),
                        (C, {"top_k": 2**31 - 1, "top_p": 1e-30, "min_p": 1, "temperature": 2}),
                        (C, {"top_k": -1}), (C, {"top_k": 0}), (C, {"temperature": -0.0}),
                        (CH, {"repetition_penalty": 1e-30, "logprobs": True, "top_logprobs": 20}),
                        (C, {"logprobs": 20}), (C, {"stop": ["", "", "", ""]}),
                        (C, {"stop": "x" * 50000}), (CH, {"presence_penalty": -2,
                                                          "frequency_penalty": 2})]:
        r = post(server, path, {**base(path), **extra})
        assert r.status_code == 200, (extra, r.text[:300])
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] in ("stop", "length")


# ---- numbers at the limits ----

def test_max_tokens_int32_max_is_a_context_error(server):
    """n_prompt + max_tokens used to overflow int (UB; a sanitized build aborted)."""
    for path in (C, CH):
        for key in ("max_tokens", "max_completion_tokens"):
            body = {**base(path), key: 2**31 - 1}
            err = assert_error(post(server, path, body), 400,
                               param="prompt" if path == C else "messages")
            assert err["code"] == "context_length_exceeded", err
            assert "2147483647 for the completion" in err["message"], err
    with pytest.raises(openai.BadRequestError) as e:
        client(server).completions.create(model=server.name, prompt="Hi", max_tokens=2**31 - 1)
    assert e.value.code == "context_length_exceeded"


def test_tiny_temperature_is_greedy(server):
    """1/temperature used to overflow float (inf logits, NaN probabilities), so a
    temperature of 1e-40 picked tokens at random instead of the most likely ones."""
    body = {"prompt": "The capital of France is", "max_tokens": 8, "seed": 7}
    greedy = post(server, C, {**body, "temperature": 0}).json()["choices"][0]["text"]
    for t in (1e-40, 1e-38, 1e-6):
        r = post(server, C, {**body, "temperature": t})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == greedy, t


def test_json_number_literals_outside_json(server):
    for raw in [b'{"prompt": "Hi", "max_tokens": NaN}', b'{"prompt": "Hi", "temperature": Infinity}',
                b'{"prompt": "Hi", "temperature": -Infinity}', b'{"prompt": "Hi", "temperature": 1e309}',
                b'{"prompt": "Hi", "top_p": -1e309}', b'{"prompt": "Hi", "max_tokens": 1e400}',
                b'{"prompt": "Hi", "max_tokens": 99999999999999999999999}',
                b'{"prompt": "Hi", "seed": 18446744073709551615}',
                b'{"prompt": "Hi", "max_tokens": 0x10}', b'{"prompt": "Hi", "max_tokens": +5}',
                b'{"prompt": "Hi", "max_tokens": 05}']:
        assert_error(post(server, C, raw), 400, needle="malformed JSON")


# ---- malformed JSON ----

MALFORMED = [
    b"[" * 10000 + b"]" * 10000,                                   # deep arrays
    b'{"a":' * 10000 + b"1" + b"}" * 10000,                        # deep objects
    b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"prompt": "Hi", "max_tokens": 2, "max_tokens": 3}',         # duplicate keys
    b'{"prompt": "\xff\xfe"}', b'{"prompt": "\xc0\xaf"}',          # invalid, overlong UTF-8
    b'{"prompt": "\xed\xa0\x80"}',                                 # UTF-8-encoded surrogate
    b'{"prompt": "\\ud800"}', b'{"prompt": "\\udc00x"}',           # lone surrogate escapes
    b'{"prompt": "a\x00b"}',                                       # NUL, raw (escaped is text)
    b'{"\xff": 1, "prompt": "Hi"}', b'{"model": "\xc3", "prompt": "Hi"}',
    b'\xef\xbb\xbf{"prompt": "Hi"}',                                # BOM
    b'{"prompt": "Hi"} {}', b'{"prompt": "Hi"}\x00', b'{"prompt": "Hi",}',
    b'"a string"', b"null", b"123", b" ", b"{", b"}",
]


@pytest.mark.parametrize("path", [C, CH, "/tokenize", "/detokenize"])
def test_malformed_json_is_400_with_json_body(server, path):
    for raw in MALFORMED:
        r = post(server, path, raw)
        assert_error(r, 400)


def test_many_keys_and_deep_unknown_fields_are_served(server):
    body = {**{f"k{i}": i for i in range(20000)}, **base(C)}
    assert post(server, C, body).status_code == 200
    deep = json.dumps(base(C))[:-1] + ', "x": ' + "[" * 1000 + "]" * 1000 + "}"
    assert post(server, C, deep).status_code == 200


# ---- prompts and messages ----

BAD_PROMPTS = [
    ([], "empty"), ([[]], "empty"), ("", "empty"), ([""], "empty"),
    ([-1], "non-negative"), ([2**31], "non-negative"), ([1.5], "token ids"), ([True], "token ids"),
    ([None], "token ids"), ({"a": 1}, "token ids"), (None, "required"), (5, "token ids"),
    ([49152], "vocabulary"), ([2**31 - 1], "vocabulary"), ([1, "a"], "batched"),
    (["a", "b"], "batched"), ([[1], [2]], "batched"), ([1, [2]], "batched"),
]


def test_bad_prompts_are_400_naming_prompt(server):
    for prompt, needle in BAD_PROMPTS:
        body = {**base(C), "prompt": prompt}
        assert_error(post(server, C, body), 400, param="prompt", needle=needle)


def test_odd_but_valid_prompts(server):
    for prompt in [[0], [[1, 2]], ["x"], " ", "\t\n", "<|im_end|>", "<|endoftext|>" * 5,
                   "\U0001F600" * 10, list(range(50))]:
        r = post(server, C, {**base(C), "prompt": prompt})
        assert r.status_code == 200, (prompt, r.text[:300])


BAD_MESSAGES = [
    (None, "required"), ("x", "list"), ([], "empty"), ([None], "object"), (["x"], "object"),
    ([{}], "role"), ([{"content": "x"}], "role"), ([{"role": 5, "content": "x"}], "role"),
    ([{"role": "user"}], "content"), ([{"role": "user", "content": None}], "content"),
    ([{"role": "tool", "content": None}], "content"), ([{"role": "function", "content": "x"}], "role"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}], "JSON"),
    ([{"role": "assistant", "tool_calls": "f"}], "list"),
    ([{"role": "USER", "content": "x"}], "role"), ([{"role": "", "content": "x"}], "role"),
    ([{"role": "user", "content": 5}], "content"),
    ([{"role": "user", "content": {"type": "text", "text": "a"}}], "content"),
    ([{"role": "user", "content": [{}]}], "text"), ([{"role": "user", "content": [1]}], "text"),
    ([{"role": "user", "content": [{"type": "text"}]}], "text"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "text"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "text"),
]


def test_bad_messages_are_400_naming_messages(server):
    for messages, needle in BAD_MESSAGES:
        body = {**base(CH), "messages": messages}
        assert_error(post(server, CH, body), 400, param="messages", needle=needle)
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(
            model=server.name, messages=[{"role": "function", "content": "x", "name": "f"}])
    assert e.value.status_code == 400 and "role" in str(e.value)


def test_odd_but_valid_messages(server):
    for messages in [[{"role": "assistant", "content": None}], [{"role": "system", "content": "x"}],
                     [{"role": "user", "content": []}], [{"role": "user", "content": ""}],
                     [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                   {"type": "text", "text": "b"}]}],
                     [{"role": "user", "content": "x", "name": 5}],
                     [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}],
                     [{"role": "user", "content": "x"}] * 20,
                     [{"role": "user", "content": "x"}, {"role": "tool", "content": "r", "tool_call_id": "1"}]]:
        r = post(server, CH, {**base(CH), "messages": messages})
        assert r.status_code == 200, (messages[:2], r.text[:300])


def test_stop_shapes(server):
    assert_error(post(server, C, {**base(C), "stop": ["a"] * 100}), 400, param="stop",
                 needle="at most")
    for stop in [{}, [1], True, 5, [None], [["a"]]]:
        assert_error(post(server, C, {**base(C), "stop": stop}), 400, param="stop")
    for stop in [[], "", [""], " ", ["\n"], ["x" * 20000]]:
        assert post(server, C, {**base(C), "stop": stop}).status_code == 200, stop


def test_unsupported_and_malformed_tool_fields(server):
    for field, value in [("functions", [{"name": "f"}]), ("function_call", {"name": "f"}),
                         ("response_format", {"type": "structural_tag"}), ("suffix", "x")]:
        assert_error(post(server, CH, {**base(CH), field: value}), 400, param=field,
                     needle="not supported")
    for field, value in [("tool_choice", "required"), ("tool_choice", {"type": "function"}),
                         ("tool_choice", "auto"),  # without tools, as vLLM
                         ("tools", 5), ("tools", [{"type": "function"}]), ("logit_bias", True),
                         ("logit_bias", {"x": 1}), ("logit_bias", {"99999999": 1})]:
        assert_error(post(server, CH, {**base(CH), field: value}), 400, param=field)
    for field, value in [("tools", []), ("tool_choice", "none"),
                         ("response_format", {"type": "text"}), ("logit_bias", {}),
                         ("logit_bias", {"1": 5})]:
        assert post(server, CH, {**base(CH), field: value}).status_code == 200, field


# ---- error messages built from client bytes ----

def test_error_message_cut_inside_utf8_is_kept(server):
    """The model name is cut to 300 bytes in the message; cut inside a UTF-8 sequence the
    whole message used to be replaced by 'invalid request'."""
    for name in ["x" * 299 + "\u00e9", "\u20ac" * 200]:
        err = post(server, C, {**base(C), "model": name}).json()["error"]
        assert "does not exist" in err["message"] and err["code"] == "model_not_found"
    r = requests.get(server.url + "/v1/models/x" + "\u00e9" * 200, timeout=TIMEOUT)
    assert_error(r, 404, needle="does not exist")


# ---- tokenize / detokenize ----

def test_tokenize_bad_input(server):
    for body in [{}, {"prompt": None}, {"prompt": 5}, {"prompt": ["a"]},
                 {"prompt": "hi", "add_special_tokens": "yes"},
                 {"prompt": "hi", "add_special_tokens": 1}]:
        assert_error(post(server, "/tokenize", body), 400, param="prompt")
    assert_error(post(server, "/tokenize", b'{"prompt": "a", "prompt": "b"}'), 400,
                 needle="duplicate")
    r = post(server, "/tokenize", {"prompt": "hi", "add_special_tokens": None})  # null: absent
    assert r.status_code == 200 and r.json()["count"] >= 1
    assert post(server, "/tokenize", {"prompt": ""}).json()["count"] == 0


def test_detokenize_bad_input(server):
    for body in [{}, {"tokens": None}, {"tokens": "12"}, {"tokens": [-1]}, {"tokens": [49152]},
                 {"tokens": [2**40]}, {"tokens": [1.0]}, {"tokens": ["1"]}, {"tokens": [[1]]},
                 {"tokens": [1, None]}]:
        assert_error(post(server, "/detokenize", body), 400, param="tokens")
    assert post(server, "/detokenize", {"tokens": []}).json() == {"prompt": ""}
    r = post(server, "/detokenize", {"tokens": list(range(49152))})  # every piece, bytes too
    assert r.status_code == 200 and len(r.json()["prompt"]) > 49152


def test_response_larger_than_write_queue_and_slow_handler(make_server):
    """A /tokenize answer bigger than the 16 MiB write queue used to be dropped (the
    connection closed, no response); and after a handler that ran longer than
    --http-timeout on the loop thread, the stale loop clock fired the idle timer at once
    and cut the response. A client that reads slowly gets all of it; one that reads
    nothing is dropped after the timeout. A request uploaded while the loop thread was
    busy with another is not timed out (its bytes waited unread: the delay was ours)."""
    srv = make_server("--max-body-mib", "8", "--http-timeout", "1")
    n = 6_000_000  # digits tokenize one per token: ~18 MB of JSON back
    r = requests.post(srv.url + "/tokenize", json={"prompt": "1" * n}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["count"] == n
    def request(n_digits):
        body = json.dumps({"prompt": "1" * n_digits}).encode()
        return b"POST /tokenize HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    slow.sendall(request(2_000_000))
    data, deadline = b"", time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 6_000_000:
        assert time.monotonic() < deadline
        chunk = slow.recv(32768)
        assert chunk, f"cut after {len(data)} bytes"
        data += chunk
        time.sleep(0.01)  # 6 MB in 32 KiB reads: > 1.8 s, more than the timeout
    slow.close()
    stalled = []
    for close in (b"", b"Connection: close\r\n"):  # kept alive, or closed after the answer
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(request(4_000_000).replace(b"Host: t\r\n", b"Host: t\r\n" + close))
        stalled.append(s)  # 12 MB answers: more than the kernel buffers hold
    time.sleep(7)  # read nothing for longer than both tokenizations and the timeout
    for s in stalled:
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got < 12_000_000, "a client that never read kept its connection"
        s.close()
    assert requests.get(srv.url + "/health", timeout=TIMEOUT).status_code == 200


def test_expect_continue_behind_an_unread_response(make_server):
    """A request with Expect: 100-continue pipelined behind a response the client does not
    read: queuing the 100 Continue hit the write-queue limit and closed the connection
    inside the parser, yet the request, complete in the same bytes, still went to the
    handler. Its generation then kept the freed connection (heap-use-after-free in
    tm_http_stream_write at its first token). Now parsing waits while 1 MiB of answers
    is unread, the silent client is dropped at the timeout, and nothing runs for it."""
    srv = make_server("--max-body-mib", "8", "--http-timeout", "2")

    def finished():
        _, by_name = parse_metrics(requests.get(srv.url + "/metrics", timeout=TIMEOUT).text)
        return sum(by_name.get("tokenmill:request_success_total", []))
    before = finished()
    a = json.dumps({"prompt": "1" * 6_000_000}).encode()  # an 18 MB answer
    b = json.dumps({"prompt": "Hi", "max_tokens": 8, "stream": True}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(a) + a +
              b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(b) + b)
    deadline = time.monotonic() + TIMEOUT
    while "POST /tokenize 200" not in srv.log():  # the 18 MB answer is queued
        assert time.monotonic() < deadline and srv.proc.poll() is None, srv.log()
        time.sleep(0.1)
    time.sleep(7)  # past the timeout that drops the silent client, and 8 tokens' time
    s.close()
    assert srv.proc.poll() is None, srv.log()
    log = srv.log_path.read_text(errors="replace")
    for mark in SANITIZER_MARKS:
        assert mark not in log, log[log.index(mark) - 200:][:3000]
    assert finished() == before, "a request ran for a connection that was closed"
    assert srv.stop() == 0, srv.log()


# ---- raw HTTP ----

def raw_exchange(server, data, n_responses=1, timeout=10):
    """Sends data, returns [(status, body)] for n_responses responses (Content-Length)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.sendall(data)
    buf, out, deadline = b"", [], time.monotonic() + timeout
    while len(out) < n_responses:
        assert time.monotonic() < deadline, f"no response in time: {buf[:300]!r}"
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:")][0])
            if len(rest) >= length:
                out.append((int(head.split()[1]), rest[:length]))
                buf = rest[length:]
                continue
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(out)} responses: {buf[:300]!r}"
        buf += chunk
    s.close()
    return out


def get(path, extra=b""):
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def test_upgrade_requests_are_served_as_http1(server):
    """Upgrade (websocket, h2c as curl --http2 sends it) is declined: the request is
    answered and the connection stays HTTP/1.1. The request after one used to get a 400
    'Pause on CONNECT/Upgrade'."""
    ws = get(b"/health", b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    out = raw_exchange(server, ws + get(b"/v1/models"), 2)
    assert [s for s, _ in out] == [200, 200]
    body = json.dumps(base(C)).encode()
    h2c = (b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    out = raw_exchange(server, h2c + get(b"/health"), 2)
    assert [s for s, _ in out] == [200, 200]
    assert json.loads(out[0][1])["object"] == "text_completion"
    out = raw_exchange(server, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: t\r\n\r\n" + get(b"/health"), 2)
    assert [s for s, _ in out] == [404, 200]
    status, body = raw_exchange(server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")[0]
    assert status == 400 and "HTTP/2" in json.loads(body)["error"]["message"]


def test_huge_chunk_size_is_413_at_once(server):
    """A chunk announced larger than the body limit is refused before its bytes come
    (it used to wait for them and answer 408 after the timeout)."""
    t0 = time.monotonic()
    out = raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\nffffffffffff\r\nab")
    assert out[0][0] == 413 and time.monotonic() - t0 < 1.5
    assert json.loads(out[0][1])["error"]["code"] == "payload_too_large"


def test_odd_request_lines_and_headers(server):
    cases = [
        (get(b"http://x/health"), 404), (get(b"*"), 404), (get(b"/health#frag"), 404),
        (get(b"/he\xffalth"), 404), (get(b"/v1/models/x\xc3"), 404),
        (get(b"/" + b"\xc3\xa9" * 150 + b"x"), 404), (get(b"/v1/completions%00"), 404),
        (get(b"/v1/models?x=1"), 200), (get(b"/health", b"Content-Length: 5\r\n") + b"hello", 200),
        (b"\r\n\r\n" + get(b"/health"), 200), (get(b"/health", b"X-A: b\r\n" * 500), 200),
        (get(b"/health", b"X: a\r\n b\r\n"), 200),
        (b"FOO /health HTTP/1.1\r\nHost: t\r\n\r\n", 400), (get(b"/he alth"), 400),
        (get(b"/health", b"X: \x00\r\n"), 400), (get(b"/health", b"NoColon\r\n"), 400),
        (get(b"/health", b"Content-Length: 1\r\nContent-Length: 1\r\n"), 400),
        (get(b"/health", b"Content-Length: -1\r\n"), 400),
        (get(b"/health", b"Transfer-Encoding: gzip\r\n"), 400),
    ]
    for data, want in cases:
        status, body = raw_exchange(server, data)[0]
        assert status == want, (data[:80], status, body[:200])
        if status != 200:
            assert json.loads(body)["error"]["message"], body


def test_head_gets_headers_only(server):
    """HEAD is answered like GET without the body (a body after a HEAD response would be
    read as the start of the next response on a kept-alive connection)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n"
              b"HEAD /v1/completions HTTP/1.1\r\nHost: t\r\n\r\n" + get(b"/health"))
    data, deadline = b"", time.monotonic() + 10
    while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b'{"status":"ok"}'):
        assert time.monotonic() < deadline, data
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()
    heads = data.split(b"HTTP/1.1 ")[1:]
    assert [h[:3] for h in heads] == [b"200", b"405", b"200"], data
    assert heads[0].endswith(b"\r\n\r\n") and heads[1].endswith(b"\r\n\r\n"), data
    assert b"Content-Length: 15" in heads[0]


# ---- many clients at once ----

def test_concurrent_abuse_leaves_nothing_behind(server):
    """Streams dropped mid-way, connections reset while queued or generating, and bad
    requests, all at once: every bad request still gets its 400, and afterwards no
    request, page or connection is left over."""
    port, errors = server.port, []
    rng = random.Random(1)
    delays = [rng.random() * 0.3 for _ in range(8)]

    def streamer(i):
        body = {"messages": [{"role": "user", "content": f"Count to {i}"}], "max_tokens": 24,
                "stream": True, "ignore_eos": True, "n": 1 + i % 3}  # groups of choices too
        with requests.post(server.url + CH, json=body, stream=True, timeout=TIMEOUT) as r:
            for n, _ in enumerate(r.iter_lines()):
                if i % 2 == 0 and n > 3:
                    break  # drop the stream mid-way

    def resetter(i):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        body = json.dumps({"prompt": "x " * 50, "max_tokens": 24, "stream": i % 2 == 0}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        time.sleep(delays[i])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST

    def bad(i):
        for body in [b"{", b"[]", b'{"prompt": [99999999]}', b'{"prompt": "x", "n": 129}']:
            r = post(server, C, body)
            if r.status_code != 400:
                errors.append((body, r.status_code))

    def run(f, i):
        try:
            f(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((f.__name__, i, repr(e)))

    threads = [threading.Thread(target=run, args=(f, i)) for i in range(8)
               for f in (streamer, resetter, bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors, errors[:5]

    def idle():
        samples, _ = parse_metrics(requests.get(server.url + "/metrics", timeout=TIMEOUT).text)
        return all(v == 0 for k, v in samples.items()
                   if k.startswith(("tokenmill:num_requests_running",
                                    "tokenmill:num_requests_waiting",
                                    "tokenmill:kv_cache_usage_perc")))
    deadline = time.monotonic() + 30
    while not idle():
        assert time.monotonic() < deadline, "requests or KV pages left after the clients went"
        time.sleep(0.1)


def test_api_key_header_variants(make_server):
    """The auth scheme is case-insensitive and a header value's trailing whitespace is not
    part of it (RFC 9110); anything else that is not exactly the key is a 401."""
    srv = make_server("--api-key", "k3y")

    def status(auth):
        extra = b"" if auth is None else b"Authorization: " + auth + b"\r\n"
        return raw_exchange(srv, get(b"/v1/models", extra))[0][0]
    for auth in [b"Bearer k3y", b"bearer k3y", b"BEARER k3y", b"Bearer k3y \t"]:
        assert status(auth) == 200, auth
    for auth in [None, b"", b"Bearer", b"Bearer ", b"Bearer  k3y", b"Bearer k3", b"Bearer k3yy",
                 b"Basic azN5", b"k3y", b"Bearer " + b"k" * 10000]:
        assert status(auth) == 401, auth
    # two keys: neither counts (vLLM's peers disagree on which would); refused outright
    assert status(b"Bearer k3y\r\nAuthorization: Bearer nope") == 400
    assert status(b"Bearer nope\r\nAuthorization: Bearer k3y") == 400
    assert raw_exchange(srv, get(b"/health"))[0][0] == 200  # no key needed
