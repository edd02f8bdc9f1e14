"""Admission under a burst: --max-queue bounds the requests that wait beyond what the batch
takes (--max-num-seqs), counted live. The admission check once read the engine's stats
snapshot, published after each step: during a burst it lagged, and with --max-queue 4 only
4 to 6 of 64 requests were admitted although 58 batch slots were free (4 with
--max-num-seqs 8, where 12 should be).

Each request streams, so its status line leaves the server right after the engine accepted
or refused it; with ignore_eos and a large max_tokens none finishes before all 64 are
answered, so the counts are exact. Raw asyncio sockets to 127.0.0.1; every wait is bounded.
"""
import asyncio
import json
import time

import pytest
import requests

from conftest import parse_metrics

N_BURST = 64
TIMEOUT = 60


async def open_stream(port, body):
    """Sends one streamed completion; returns (status, headers, writer) once the response
    head is in. The writer keeps the connection (and so the request) open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in head[1:] if l)}
    return int(head[0].split()[1]), headers, writer


async def burst(port, name, n):
    """n concurrent streamed completions; returns [(status, headers)] once all are answered,
    then closes every connection (which aborts the admitted requests)."""
    body = {"model": name, "prompt": "Count to a thousand:", "max_tokens": 4000,
            "ignore_eos": True, "stream": True}
    results = await asyncio.wait_for(
        asyncio.gather(*(open_stream(port, body) for _ in range(n))), TIMEOUT)
    for _, _, w in results:
        w.close()
    for _, _, w in results:
        try:
            await asyncio.wait_for(w.wait_closed(), 10)
        except (ConnectionError, asyncio.TimeoutError):
            pass
    return [(status, headers) for status, headers, _ in results]


def wait_aborted(srv, n):
    """Waits until n requests in all have ended with finish_reason "abort". The API counts
    one when it takes the request's last event, which the engine queues after it
    uncounted the request (the stats snapshot would not do: it lags a step)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        samples, _ = parse_metrics(requests.get(srv.url + "/metrics", timeout=TIMEOUT).text)
        aborted = sum(v for k, v in samples.items()
                      if k.startswith("tokenmill:request_success_total{") and 'finished_reason="abort"' in k)
        if aborted >= n:
            assert aborted == n
            return
        time.sleep(0.1)
    pytest.fail(f"fewer than {n} requests aborted after their clients left")


@pytest.mark.parametrize("max_num_seqs,max_queue,admitted", [(64, 4, 64), (8, 4, 12)])
def test_burst_admits_batch_plus_queue(make_server, max_num_seqs, max_queue, admitted):
    srv = make_server("--max-num-seqs", str(max_num_seqs), "--max-queue", str(max_queue))
    for round_ in range(2):  # the second burst finds the count back at zero
        got = asyncio.run(burst(srv.port, srv.name, N_BURST))
        ok = [h for s, h in got if s == 200]
        busy = [h for s, h in got if s == 503]
        assert (len(ok), len(busy)) == (admitted, N_BURST - admitted), \
            f"round {round_}: {len(ok)} admitted, {len(busy)} refused, statuses " \
            f"{sorted(set(s for s, _ in got))}"
        assert all(h.get("retry-after") == "1" for h in busy)
        wait_aborted(srv, admitted * (round_ + 1))
