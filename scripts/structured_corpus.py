#!/usr/bin/env python3
"""Runs the structured-output schema corpus against a tokenmill server.

For every schema of tests/server/data/schema_corpus.json: one greedy and one sampled
request with response_format json_schema (strict) through the official openai client.
A request that stops must give JSON that parses and validates (jsonschema, draft 2020-12,
with its format checker); one that hits max_tokens is counted as truncated (the grammar
engine's tests check that such text is a prefix of a valid document). Schemas the front
end refuses must get a 400 naming the feature. Prints a summary per category and writes
every result as JSON.

    scripts/structured_corpus.py                       # starts build/tokenmill serve
    scripts/structured_corpus.py --url http://127.0.0.1:8000 --subset 30 --max-tokens 200

Exit status 1 when any output is invalid or any refusal is missing.
"""
import argparse
import concurrent.futures as futures
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import openai

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests/server/data/schema_corpus.json"
SYSTEM = "You are a helpful assistant that answers with a single JSON document and nothing else."


def load_corpus(subset=None):
    schemas = json.loads(CORPUS.read_text())["schemas"]
    if not subset:
        return schemas
    # A fixed, representative subset: every category, the hand-written anchors first.
    by_cat, picked = {}, []
    for s in schemas:
        by_cat.setdefault(s["category"].split("/")[0], []).append(s)
    while len(picked) < subset and any(by_cat.values()):
        for cat in sorted(by_cat):
            if by_cat[cat] and len(picked) < subset:
                picked.append(by_cat[cat].pop(0))
    return picked


def validate(text, schema):
    """'valid', or why not."""
    try:
        value = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError as e:
        return f"not JSON: {e}"
    cls = jsonschema.Draft202012Validator
    errors = sorted(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value), key=str)
    return "valid" if not errors else f"invalid: {errors[0].message}"


def run_one(client, model, entry, mode, max_tokens):
    """One request; returns a result dict."""
    kw = {"temperature": 0.0} if mode == "greedy" else {"temperature": 1.0, "seed": 1234}
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": entry["prompt"] + "\nUse this JSON schema: " + json.dumps(entry["schema"])}]
    t0 = time.monotonic()
    out = {"name": entry["name"], "category": entry["category"], "mode": mode}
    try:
        r = client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "corpus", "schema": entry["schema"], "strict": True}}, **kw)
    except openai.BadRequestError as e:
        out.update(status=400, message=str(e), seconds=time.monotonic() - t0)
        return out
    c = r.choices[0]
    out.update(status=200, finish=c.finish_reason, text=c.message.content, seconds=time.monotonic() - t0,
               completion_tokens=r.usage.completion_tokens)
    if c.finish_reason == "stop":
        out["check"] = validate(c.message.content, entry["schema"])
    return out


def verdict(entry, res):
    """'valid', 'truncated', 'refused', or a failure string."""
    expect = entry["expect"]
    if expect.startswith("unsupported:"):
        what = expect.split(":", 1)[1]
        if res["status"] == 400 and what in res.get("message", ""):
            return "refused"
        return f"FAIL: expected a 400 naming {what}, got {res['status']} {res.get('message', res.get('text', ''))[:200]}"
    if res["status"] != 200:
        return f"FAIL: {res['status']} {res.get('message', '')[:300]}"
    if res["finish"] == "length":
        return "truncated"
    if res["finish"] != "stop":
        return f"FAIL: finish_reason {res['finish']}"
    return "valid" if res["check"] == "valid" else f"FAIL: {res['check']}"


def run_corpus(url, model, subset=None, max_tokens=400, concurrency=8, modes=("greedy", "sampled")):
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=1800, max_retries=0)
    entries = load_corpus(subset)
    jobs = [(e, m) for e in entries for m in (modes if e["expect"] == "ok" else modes[:1])]
    results = []
    with futures.ThreadPoolExecutor(concurrency) as pool:
        futs = {pool.submit(run_one, client, model, e, m, max_tokens): (e, m) for e, m in jobs}
        for f in futures.as_completed(futs):
            e, m = futs[f]
            res = f.result()
            res["verdict"] = verdict(e, res)
            results.append(res)
    return results


def summarize(results):
    cats = {}
    for r in results:
        cat = r["category"].split("/")[0]
        v = r["verdict"] if not r["verdict"].startswith("FAIL") else "FAIL"
        cats.setdefault(cat, {}).setdefault(f"{r['mode']}:{v}", 0)
        cats[cat][f"{r['mode']}:{v}"] += 1
    lines = []
    for cat in sorted(cats):
        lines.append(f"{cat:16s} " + ", ".join(f"{k} {n}" for k, n in sorted(cats[cat].items())))
    total = {}
    for r in results:
        v = r["verdict"] if not r["verdict"].startswith("FAIL") else "FAIL"
        total[v] = total.get(v, 0) + 1
    lines.append("total            " + ", ".join(f"{k} {n}" for k, n in sorted(total.items())))
    return "\n".join(lines), total


class Server:
    """build/tokenmill serve on a free port (stopped by .stop())."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("serve exited early")
            if select.select([self.proc.stdout], [], [], 0.5)[0]:
                m = re.search(r"serving (\S+) on (http://127\.0\.0\.1:\d+)", self.proc.stdout.readline().decode())
                if m:
                    self.model, self.url = m.group(1), m.group(2)
                    return
        self.stop()
        raise RuntimeError("serve not ready in 120 s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start build/tokenmill serve)")
    ap.add_argument("--bin", default=os.environ.get("TM_BIN", str(ROOT / "build/tokenmill")))
    ap.add_argument("--subset", type=int, help="only this many schemas (every category)")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="structured-corpus-results.json")
    args = ap.parse_args()
    server = None
    if args.url:
        url, model = args.url, openai.OpenAI(base_url=args.url + "/v1", api_key="none").models.list().data[0].id
    else:
        server = Server(args.bin, "--max-num-seqs", str(max(16, args.concurrency)))
        url, model = server.url, server.model
    t0 = time.monotonic()
    try:
        results = run_corpus(url, model, args.subset, args.max_tokens, args.concurrency)
    finally:
        if server:
            server.stop()
    text, total = summarize(results)
    print(text)
    print(f"{len(results)} requests in {time.monotonic() - t0:.0f} s")
    for r in results:
        if r["verdict"].startswith("FAIL"):
            print(f"{r['name']} {r['mode']}: {r['verdict']}\n  {r.get('text', '')[:300]!r}")
    Path(args.out).write_text(json.dumps(sorted(results, key=lambda r: (r["name"], r["mode"])), indent=1))
    sys.exit(1 if total.get("FAIL") else 0)


if __name__ == "__main__":
    main()
