#!/usr/bin/env python3
"""Server overhead: TTFT and inter-token latency through HTTP vs the engine's own figures.

Runs the same workload twice, one after the other on the same machine:
  1. through `tokenmill serve` (HTTP + SSE, one client thread per stream, `requests`),
  2. straight into the engine (bench_engine_latency: submit -> token events, no HTTP).
Workload: N concurrent completion streams, greedy, ignore_eos, MAX_TOKENS each, prompts
"<nonce> i: <fixed text>" (a fresh nonce per run, so no prefix-cache hits across runs).

usage: bench/bench_server.py [--bin build/tokenmill] [--engine-bin build/bench_engine_latency]
                             [--streams 1,16] [--max-tokens 64] [--model PATH] [--threads N]
"""
import argparse
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("Write a detailed essay about the history of bread, from the first flatbreads baked on "
        "hot stones to modern industrial bakeries, covering grains, yeast and ovens.")


def start_server(args):
    cmd = [args.bin, "serve", "--host", "127.0.0.1", "--port", "0", "--max-num-seqs", "64"]
    if args.model:
        cmd.insert(2, args.model)
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve exited with {proc.returncode}")
        if select.select([proc.stdout], [], [], 0.5)[0]:
            m = re.search(rb"on (http://\S+)", proc.stdout.readline())
            if m:
                return proc, m.group(1).decode()
    proc.kill()
    sys.exit("serve did not start")


def http_stream(url, prompt, max_tokens, out):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True}
    t0 = time.perf_counter()
    times = []
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: {") and b'"text":""' not in line:
                times.append(time.perf_counter())
    out.append((times[0] - t0, [b - a for a, b in zip(times, times[1:])]))


def run_http(url, n, max_tokens):
    nonce = uuid.uuid4().hex[:8]
    out = []
    threads = [threading.Thread(target=http_stream, args=(url, f"{nonce} {i}: {TEXT}", max_tokens, out))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    ttft = [o[0] * 1e3 for o in out]
    gaps = [g * 1e3 for o in out for g in o[1]]
    return ttft, statistics.mean(gaps) if gaps else float("nan")


def run_engine(args, n, max_tokens):
    model = args.model or str(Path.home() / ".cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    cmd = [args.engine_bin, model, str(n), str(max_tokens), uuid.uuid4().hex[:8]]
    if args.threads:
        cmd.append(str(args.threads))
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, timeout=900).stdout)
    return res["ttft_ms"], res["itl_ms_mean"]


def fmt(ttft, itl):
    return f"TTFT p50 {statistics.median(ttft):8.2f} ms  max {max(ttft):8.2f} ms  ITL mean {itl:7.2f} ms"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=str(ROOT / "build" / "tokenmill"))
    p.add_argument("--engine-bin", default=None)
    p.add_argument("--streams", default="1,16")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if not args.engine_bin:
        args.engine_bin = str(Path(args.bin).parent / "bench_engine_latency")
    streams = [int(s) for s in args.streams.split(",")]

    proc, url = start_server(args)
    http = {}
    try:
        run_http(url, 1, 8)  # warm-up
        for n in streams:
            http[n] = run_http(url, n, args.max_tokens)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    engine = {n: run_engine(args, n, args.max_tokens) for n in streams}

    print(f"max_tokens={args.max_tokens}, greedy, ignore_eos; times in ms")
    for n in streams:
        (ht, hi), (et, ei) = http[n], engine[n]
        print(f"streams={n:3d}  http  : {fmt(ht, hi)}")
        print(f"             engine: {fmt(et, ei)}")
        print(f"             overhead: TTFT p50 {statistics.median(ht) - statistics.median(et):+.2f} ms,"
              f" ITL {hi - ei:+.3f} ms")


if __name__ == "__main__":
    main()
