#!/usr/bin/env python3
"""A tiny OpenAI-compatible streaming server for testing `tokenmill bench`: it answers
instantly (every stream is rendered in one piece), so the client is the only thing a
measurement against it can measure. 127.0.0.1 only.

usage: fake_openai_server.py [--mode fast|malformed|die|stall|unauthorized|emptytext|notext]
Prints "port N" on stdout once listening; runs until killed.
  fast          every stream has max_tokens one-token events, then usage and [DONE]
  malformed     the third event of every stream is not JSON
  die           two events, then the connection is dropped mid-stream
  stall         two events, then nothing (the stream never ends)
  unauthorized  every request gets 401
  emptytext     as fast, but every token's text is empty (a synthetic model's padding
                pieces); the usage event still counts the tokens
  notext        as emptytext, without the usage event
"""
import argparse
import asyncio
import json

MODEL = "fake-model"
_cache = {}


def stream_body(n_tokens, chat, n_prompt, text="tok ", with_usage=True):
    key = (n_tokens, chat, n_prompt, text, with_usage)
    if key in _cache:
        return _cache[key]
    obj = "chat.completion.chunk" if chat else "text_completion"
    if chat:
        one = {"id": "x", "object": obj, "model": MODEL,
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        fin = {"id": "x", "object": obj, "model": MODEL,
               "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    else:
        one = {"id": "x", "object": obj, "model": MODEL,
               "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]}
        fin = {"id": "x", "object": obj, "model": MODEL,
               "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}]}
    usage = {"id": "x", "object": obj, "model": MODEL, "choices": [],
             "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_tokens,
                       "total_tokens": n_prompt + n_tokens,
                       "prompt_tokens_details": {"cached_tokens": 0}}}
    ev = ("data: " + json.dumps(one, separators=(",", ":")) + "\n\n").encode()
    tail = "data: " + json.dumps(fin) + "\n\n"
    if with_usage:
        tail += "data: " + json.dumps(usage) + "\n\n"
    body = ev * n_tokens + (tail + "data: [DONE]\n\n").encode()
    _cache[key] = (ev, body)
    return _cache[key]


def response(status, body, ctype="application/json"):
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode() + body


def chunked_head():
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\n\r\n")


def chunk(data):
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def handle(reader, writer, mode):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = 0
            for l in lines[1:]:
                if l.lower().startswith("content-length:"):
                    length = int(l.split(":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            if mode == "unauthorized":
                writer.write(response(401, json.dumps({"error": {"message": "Invalid API key",
                                                                  "type": "invalid_request_error"}}).encode()))
            elif path == "/v1/models":
                writer.write(response(200, json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()))
            elif path == "/tokenize":
                writer.write(response(200, json.dumps({"tokens": list(range(100, 400))}).encode()))
            elif path == "/detokenize":
                text = " ".join(f"w{t}" for t in body.get("tokens", []))
                writer.write(response(200, json.dumps({"prompt": text}).encode()))
            elif path in ("/v1/completions", "/v1/chat/completions"):
                chat = path.endswith("chat/completions")
                n = int(body.get("max_tokens") or 16)
                p = body.get("prompt")
                n_prompt = len(p) if isinstance(p, list) else len(str(p or body.get("messages", "")).split())
                ev, full = stream_body(n, chat, n_prompt, "" if mode in ("emptytext", "notext") else "tok ",
                                       mode != "notext")
                if mode in ("fast", "emptytext", "notext"):
                    writer.write(response(200, full, "text/event-stream"))
                elif mode == "malformed":
                    writer.write(chunked_head() + chunk(ev * 2 + b"data: {not json\n\n") + chunk(full))
                    writer.write(b"0\r\n\r\n")
                else:  # die / stall: two events, then drop or hang
                    writer.write(chunked_head() + chunk(ev * 2))
                    await writer.drain()
                    if mode == "die":
                        writer.transport.abort()
                        return
                    await asyncio.sleep(3600)
            else:
                writer.write(response(404, b'{"error": {"message": "no such path"}}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="fast", choices=["fast", "malformed", "die", "stall", "unauthorized", "emptytext", "notext"])
    a = ap.parse_args()
    srv = await asyncio.start_server(lambda r, w: handle(r, w, a.mode), "127.0.0.1", 0, limit=1 << 22)
    print("port", srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
