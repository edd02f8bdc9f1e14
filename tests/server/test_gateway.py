"""The issue-19 fields through a gateway in front of tokenmill, with the official openai client.

The gateway (stdlib asyncio, 127.0.0.1) behaves as the proxies users put in front of an
inference server do: like LiteLLM it parses every JSON body and writes it again (other key
order, other spacing, non-ASCII escaped), and re-emits each server-sent event after a JSON
round trip; like nginx with buffering it cuts the event stream into chunks of its own
(several events in one chunk, events split across chunks), and it opens one upstream
connection per request. What the client gets back must still be a complete OpenAI answer:
tools and a forced tool_choice, tool messages in the history, n > 1 with usage counted
once, logit_bias, and the errors (suffix without fill-in-the-middle tokens, n above the
limit, an unknown function), streaming and not.
"""
import asyncio
import json
import threading
import urllib.request

import jsonschema
import openai
import pytest

from conftest import WEATHER, Server

CHUNK = 7  # bytes per chunk the gateway sends at most: events split and merged anyhow


def _reserialize(body):
    """LiteLLM-style: parse and write again, keys reversed, ASCII only."""
    def flip(x):
        if isinstance(x, dict):
            return {k: flip(x[k]) for k in reversed(list(x))}
        if isinstance(x, list):
            return [flip(v) for v in x]
        return x
    return json.dumps(flip(json.loads(body)), ensure_ascii=True, indent=1).encode()


async def _read_request(reader):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


async def _proxy(client_r, client_w, upstream_port):
    try:
        while True:
            method, path, headers, body = await _read_request(client_r)
            if body:
                body = _reserialize(body)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
            fwd = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{upstream_port}", "Connection: close",
                   f"Content-Length: {len(body)}", "Content-Type: application/json"]
            if "authorization" in headers:
                fwd.append(f"Authorization: {headers['authorization']}")
            up_w.write(("\r\n".join(fwd) + "\r\n\r\n").encode() + body)
            await up_w.drain()
            status_line = (await asyncio.wait_for(up_r.readline(), 120)).decode("latin-1").strip()
            status = int(status_line.split(" ")[1])
            up_headers = {}
            while True:
                l = (await asyncio.wait_for(up_r.readline(), 120)).decode("latin-1").strip()
                if not l:
                    break
                k, v = l.split(":", 1)
                up_headers[k.strip().lower()] = v.strip()
            stream = up_headers.get("content-type", "").startswith("text/event-stream")
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
            if not stream:  # buffered whole, parsed, written again
                raw = await asyncio.wait_for(_read_body(up_r, up_headers), 300)
                out = _reserialize(raw) if raw.strip() else raw
                client_w.write((f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                                f"Content-Length: {len(out)}\r\n\r\n").encode() + out)
            else:  # events re-emitted after a JSON round trip, in chunks of CHUNK bytes
                client_w.write((f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/event-stream\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n").encode())
                pending = b""
                async for event in _events(up_r, up_headers):
                    data = event[len(b"data: "):] if event.startswith(b"data: ") else event
                    if data.strip() != b"[DONE]" and data.strip():
                        data = json.dumps(json.loads(data), ensure_ascii=True).encode()
                    pending += b"data: " + data + b"\n\n"
                    while len(pending) >= CHUNK:
                        client_w.write(b"%x\r\n" % CHUNK + pending[:CHUNK] + b"\r\n")
                        pending = pending[CHUNK:]
                    await client_w.drain()
                if pending:
                    client_w.write(b"%x\r\n" % len(pending) + pending + b"\r\n")
                client_w.write(b"0\r\n\r\n")
            await client_w.drain()
            up_w.close()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, asyncio.CancelledError):
        pass
    finally:
        client_w.close()


async def _read_body(r, headers):
    if "content-length" in headers:
        return await r.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            n = int((await r.readline()).strip(), 16)
            if n == 0:
                await r.readline()
                return out
            out += await r.readexactly(n)
            await r.readline()
    return await r.read()


async def _events(r, headers):
    """The upstream's SSE events (the 'data: ...' payloads), however it chunks them."""
    buf = b""
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    while True:
        if chunked:
            n = int((await asyncio.wait_for(r.readline(), 300)).strip(), 16)
            piece = await r.readexactly(n) if n else b""
            await r.readline()
        else:
            piece = await asyncio.wait_for(r.read(65536), 300)
        if not piece:
            break
        buf += piece
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            yield ev.strip()


class Gateway:
    def __init__(self, upstream_port):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.srv = await asyncio.start_server(lambda r, w: _proxy(r, w, upstream_port), "127.0.0.1", 0)
            self.port = self.srv.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        assert ready.wait(30)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        async def stop():
            self.srv.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()
        asyncio.run_coroutine_threadsafe(stop(), self.loop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("gw"), "--tool-call-parser", "hermes", "--max-num-seqs", "8",
               "--kv-cache-mem", "128")
    g = Gateway(s.port)
    yield g, s
    g.close()
    assert s.stop() == 0, s.log()


def client(g):
    return openai.OpenAI(base_url=g.url, api_key="none", max_retries=0, timeout=120)


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_call_through_the_gateway(gw, stream):
    g, s = gw
    c = client(g)
    kw = dict(model=s.name, messages=[{"role": "user", "content": "What's the weather like in Paris?"}],
              tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
              max_tokens=60, temperature=0)
    if not stream:
        r = c.chat.completions.create(**kw)
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls"
        calls = [(tc.id, tc.function.name, tc.function.arguments) for tc in ch.message.tool_calls]
        assert not ch.message.content
    else:
        parts, finish = {}, None
        for ev in c.chat.completions.create(**kw, stream=True):
            if not ev.choices:
                continue
            d = ev.choices[0].delta
            assert not d.content  # no markup or arguments leak into content
            for tc in d.tool_calls or []:
                p = parts.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                p["id"] = tc.id or p["id"]
                p["name"] = (tc.function.name if tc.function else None) or p["name"]
                p["args"] += (tc.function.arguments if tc.function else None) or ""
            finish = ev.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        calls = [(p["id"], p["name"], p["args"]) for p in parts.values()]
    assert len(calls) == 1
    call_id, name, args = calls[0]
    assert call_id and name == "get_weather"
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])


def _greedy_first(c, s, msgs, bias=None):
    r = c.chat.completions.create(model=s.name, messages=msgs, max_tokens=1, temperature=0,
                                  logprobs=True, logit_bias=bias or {})
    return r.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_tool_history_n_and_logit_bias_through_the_gateway(gw, stream):
    g, s = gw
    c = client(g)
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "content": "22 C and sunny", "tool_call_id": "call_1"}]
    # logit_bias: the greedy first token, forbidden, is no longer the first token
    first = _greedy_first(c, s, msgs)
    ids = post_json(g, "/tokenize", {"prompt": first, "add_special_tokens": False})["tokens"]
    assert len(ids) == 1, ids
    assert _greedy_first(c, s, msgs, {str(ids[0]): -100}) != first
    # n = 2 over the tool history, the prompt counted once
    kw = dict(model=s.name, messages=msgs, tools=[WEATHER], tool_choice="none", n=2, max_tokens=12,
              temperature=1.0, seed=5)
    one = c.chat.completions.create(**{**kw, "n": 1})
    if not stream:
        r = c.chat.completions.create(**kw)
        assert sorted(ch.index for ch in r.choices) == [0, 1]
        assert r.usage.prompt_tokens == one.usage.prompt_tokens
        assert 2 <= r.usage.completion_tokens <= 24
        assert all(not ch.message.tool_calls for ch in r.choices)
    else:
        seen, usage = set(), None
        for ev in c.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
            for ch in ev.choices:
                seen.add(ch.index)
            usage = ev.usage or usage
        assert seen == {0, 1}
        assert usage.prompt_tokens == one.usage.prompt_tokens
        assert 2 <= usage.completion_tokens <= 24


def post_json(g, path, body):
    req = urllib.request.Request(g.url[:-len("/v1")] + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_errors_come_through_the_gateway(gw):
    g, s = gw
    c = client(g)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=s.name, prompt="def f(", suffix="return 1", max_tokens=4)
    assert "suffix" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=s.name, messages=[{"role": "user", "content": "hi"}], n=1000,
                                  max_tokens=2)
    assert "n" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=s.name, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
                                  tool_choice={"type": "function", "function": {"name": "nope"}}, max_tokens=2)
    assert "nope" in str(e.value)
