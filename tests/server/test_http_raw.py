"""HTTP edge cases through raw sockets (the session server runs with --http-timeout 2 and
--max-body-mib 1). Every read has a deadline; only 127.0.0.1 is used."""
import json
import socket
import threading
import time

import pytest

DEADLINE = 30


def connect(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Reads HTTP/1.1 responses (Content-Length or chunked) off a socket, in order."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _until(self, sep):
        deadline = time.monotonic() + DEADLINE
        while sep not in self.buf:
            assert time.monotonic() < deadline, "response not complete in time"
            self._fill()
        head, self.buf = self.buf.split(sep, 1)
        return head

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in head[1:])}
        if "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            assert headers.get("transfer-encoding") == "chunked"
            body = b""
            for _ in range(100000):
                size = int(self._until(b"\r\n"), 16)
                body += self._take(size)
                self._take(2)
                if size == 0:
                    break
        return status, headers, body

    def closed(self, timeout):
        """True when the peer closes within timeout (all data before it is skipped)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True


def completion_request(server, body=None, extra_headers=b""):
    data = json.dumps(body or {"model": server.name, "prompt": "Hi", "max_tokens": 2,
                               "temperature": 0}).encode()
    return (b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" +
            extra_headers + b"Content-Length: %d\r\n\r\n" % len(data) + data)


def test_body_in_one_byte_writes(server):
    s = connect(server)
    for b in completion_request(server):
        s.send(bytes([b]))
    status, _, body = Reader(s).response()
    assert status == 200, body
    assert json.loads(body)["choices"][0]["text"] is not None
    s.close()


def test_pipelined_requests_answered_in_order(server):
    s = connect(server)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n" + completion_request(server) +
              b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n" +
              b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    r = Reader(s)
    st1, _, b1 = r.response()
    st2, _, b2 = r.response()
    st3, _, b3 = r.response()
    st4, _, b4 = r.response()
    assert (st1, st2, st3, st4) == (200, 200, 200, 404)
    assert json.loads(b1) == {"status": "ok"}
    assert json.loads(b2)["object"] == "text_completion"
    assert json.loads(b3)["object"] == "list"
    assert json.loads(b4)["error"]["code"] == "not_found"
    s.close()


def test_long_pipeline_behind_a_generation(server):
    """Requests pipelined behind a generation wait unparsed; once it ended they were
    answered by a recursion one level deep per request (each answer parsed the next), and
    40000 of them overflowed the stack: the server died (SIGSEGV, or an ASan report)."""
    n = 40000  # 960 KB: all of it is read while the generation runs (backlog < 1 MiB + 16 KiB)
    s = connect(server)
    s.sendall(completion_request(server, {"prompt": "Hi", "max_tokens": 64, "ignore_eos": True})
              + b"GET /health HTTP/1.1\r\n\r\n" * n)
    data, ok, deadline = bytearray(), b'{"status":"ok"}', time.monotonic() + DEADLINE
    while not data.endswith(ok) or data.count(ok) < n:
        assert time.monotonic() < deadline, f"{data.count(ok)} of {n} answers in time"
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {data.count(ok)} of {n} answers"
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == n + 1 and b'"text_completion"' in data
    s.close()


def test_long_pipeline_is_answered_as_the_client_reads(make_server):
    """300000 requests (7 MB) pipelined behind a generation were all answered in one turn
    of the loop once it ended: 33 MB of answers queued at once, so the write-queue limit
    (16 MiB) closed the connection of a client that was reading them, and every other
    connection waited for that turn. Parsing now pauses while 1 MiB of answers waits."""
    srv = make_server("--http-timeout", "5")  # 8 MiB body limit: the whole pipeline is read
    n, ok = 300000, b'{"status":"ok"}'
    s = connect(srv)
    body = json.dumps({"prompt": "Hi", "max_tokens": 32, "ignore_eos": True}).encode()
    data = (b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body + b"GET /health HTTP/1.1\r\n\r\n" * n)
    sender = threading.Thread(target=s.sendall, args=(data,))
    sender.start()
    got, tail, count, deadline = 0, b"", 0, time.monotonic() + 120
    while count < n:
        assert time.monotonic() < deadline, f"{count} of {n} answers in time"
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {count} of {n} answers"
        joined = tail + chunk
        count += joined.count(ok)
        tail = joined[-(len(ok) - 1):]
    sender.join(DEADLINE)
    s.close()


def test_keep_alive_then_streaming_on_same_connection(server):
    s = connect(server)
    r = Reader(s)
    for _ in range(3):
        s.sendall(completion_request(server, {"prompt": "Hi", "max_tokens": 3, "stream": True}))
        status, headers, body = r.response()
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        assert body.rstrip().endswith(b"data: [DONE]")
    s.close()


def test_http10_stream_is_not_chunked(server):
    """An HTTP/1.0 client cannot read chunked framing (RFC 9112 7.1): a stream used to come
    with Transfer-Encoding: chunked and chunk-size lines inside the SSE text. It now goes
    out unframed and the close ends it, as h11 (vLLM's uvicorn) does."""
    for keep_alive in (b"", b"Connection: keep-alive\r\n"):
        s = connect(server)
        req = completion_request(server, {"prompt": "Hi", "max_tokens": 3, "stream": True},
                                 keep_alive)
        s.sendall(req.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        data, deadline = b"", time.monotonic() + DEADLINE
        while chunk := s.recv(65536):
            assert time.monotonic() < deadline
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
        assert b"transfer-encoding" not in head.lower() and b"Connection: close" in head, head
        events = body.decode().split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""], body
        for e in events[:-2]:
            assert json.loads(e.removeprefix("data: "))["object"] == "text_completion", e


def test_chunked_request_body(server):
    data = json.dumps({"prompt": "Hi", "max_tokens": 2}).encode()
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
              b"%x\r\n" % 5 + data[:5] + b"\r\n" + b"%x\r\n" % (len(data) - 5) + data[5:] +
              b"\r\n0\r\n\r\n")
    status, _, body = Reader(s).response()
    assert status == 200, body
    s.close()


def test_expect_100_continue_is_answered_before_the_body(server):
    # curl sends "Expect: 100-continue" for large bodies and waits ~1 s for the interim
    # answer; without one this server would also 408 the silent client after 2 s.
    data = json.dumps({"model": server.name, "prompt": "Hi", "max_tokens": 2,
                       "temperature": 0}).encode()
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Expect: 100-Continue\r\nContent-Length: %d\r\n\r\n" % len(data))
    r = Reader(s)
    assert r._until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue"
    s.sendall(data)
    status, _, body = r.response()
    assert status == 200, body
    assert json.loads(body)["object"] == "text_completion"
    s.close()


def test_expect_100_continue_with_too_large_body_gets_only_413(server):
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % (2 << 20))
    status, _, body = Reader(s).response()
    assert status == 413, body
    s.close()


def test_missing_content_length(server):
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\r\n")
    status, _, body = Reader(s).response()
    assert status == 400
    assert "Content-Length" in json.loads(body)["error"]["message"]
    s.close()


def test_oversized_headers(server):
    s = connect(server)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    r = Reader(s)
    status, headers, body = r.response()
    assert status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert headers["connection"] == "close"
    assert r.closed(5)


def test_oversized_body_rejected_before_upload(server):
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n{")
    r = Reader(s)
    status, _, _ = r.response()  # answered without the client sending the 5 MB
    assert status == 413
    assert r.closed(5)


def test_oversized_chunked_body(server):
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    status = None
    try:
        for _ in range(40):  # 2.5 MiB > 1 MiB
            s.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, _, _ = Reader(s).response()
    assert status == 413


def test_invalid_utf8_in_json_string(server):
    s = connect(server)
    data = b'{"prompt": "caf\xc3\x28 \xff\xfe", "max_tokens": 2}'
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(data)
              + data)
    r = Reader(s)
    status, _, body = r.response()
    assert status == 400
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error"
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection is still usable
    assert r.response()[0] == 200
    s.close()


def test_garbage_is_400_and_closes(server):
    s = connect(server)
    s.sendall(b"\x16\x03\x01\x02\x00 definitely not http\r\n\r\n")
    r = Reader(s)
    assert r.response()[0] == 400
    assert r.closed(5)


def test_idle_connection_times_out(server):
    s = connect(server)
    t0 = time.monotonic()
    assert Reader(s).closed(10), "idle connection was never closed"
    assert 1.5 < time.monotonic() - t0 < 8  # --http-timeout 2


def test_slow_partial_request_gets_408(server):
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{\"pro")
    r = Reader(s)
    status, _, body = r.response()
    assert status == 408 and json.loads(body)["error"]["code"] == "timeout"
    assert r.closed(5)


def test_max_connections(make_server):
    srv = make_server("--max-connections", "4", "--http-timeout", "30")
    held = [connect(srv) for _ in range(4)]
    time.sleep(0.2)
    extra = connect(srv)
    r = Reader(extra)
    status, headers, _ = r.response()
    assert status == 503 and headers.get("retry-after") == "1"
    assert r.closed(5)
    extra.close()
    held[0].close()
    time.sleep(0.3)
    s = connect(srv)  # a slot is free again
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    assert Reader(s).response()[0] == 200
    for h in held[1:] + [s]:
        h.close()


def test_client_that_never_reads_is_dropped_after_an_error(make_server):
    """A client sends a request with a large answer, then part of another, and reads
    nothing. The timeout answered the partial request with a 408 that could not leave,
    and while an answered error waited for its writes no timer could close the
    connection: it stayed open until the client chose to close it (the one slot of
    --max-connections 1 was held; a new client got 503)."""
    srv = make_server("--max-connections", "1", "--http-timeout", "1")
    body = json.dumps({"prompt": "1" * 1_000_000}).encode()  # a ~3 MB answer
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(DEADLINE)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"POST /tokenize HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body +
              b"GET /hea")
    time.sleep(5)  # several timeouts, reading nothing
    other = connect(srv)
    other.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    assert Reader(other).response()[0] == 200  # 503 while the silent client held the slot
    other.close()
    s.close()


def test_error_mid_upload_is_answered_once(server):
    """After a 413 the rest of the upload is discarded, never parsed again: exactly one
    response comes back before the connection closes (and one access line is logged)."""
    s = connect(server)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    try:
        for _ in range(40):  # 2.5 MiB > 1 MiB, in many writes that arrive after the 413
            s.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(DEADLINE)
    data, deadline = b"", time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, data
