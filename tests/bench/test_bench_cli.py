"""`tokenmill bench` end to end: against a fake server that answers instantly (client
speed, failures of every kind, seeded arrivals, sweeps) and against a real
`tokenmill serve` on the default model (every workload, keys and values of the result).
Everything runs on 127.0.0.1 with timeouts."""
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TM_BIN", str(ROOT / "build" / "tokenmill"))
MODEL = Path.home() / ".cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf"
HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_openai_server.py"

pytestmark = pytest.mark.skipif(not Path(BIN).exists(), reason=f"{BIN} not built (set TM_BIN)")

REQUIRED_KEYS = [
    "date", "backend", "model_id", "dataset_name", "num_prompts", "request_rate", "burstiness",
    "max_concurrency", "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "max_output_tokens_per_s", "max_concurrent_requests", "prefix_cache_hit_rate", "cost",
] + [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p90", "p99")]


def start(cmd, ready_re, timeout=120, **kw):
    """Starts cmd; returns (proc, match of ready_re on its stdout)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        if select.select([proc.stdout], [], [], 0.5)[0]:
            m = re.search(ready_re, proc.stdout.readline().decode(errors="replace"))
            if m:
                return proc, m
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def fake(request):
    """fake("mode") -> base URL of a fake server in that mode."""
    procs = []

    def make(mode="fast"):
        p, m = start([sys.executable, str(FAKE), "--mode", mode], rb"port (\d+)".decode())
        procs.append(p)
        return f"http://127.0.0.1:{m.group(1)}"

    yield make
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def serve(*args):
    if not MODEL.exists():
        pytest.skip("default model missing: run scripts/fetch-model")
    return start([BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--threads", "2", *args],
                 r"on (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def real():
    proc, m = serve("--max-num-seqs", "16", "--kv-cache-mem", "128")
    yield m.group(1)
    stop(proc)


def bench(url, *args, timeout=240, env=None, prefix=()):
    cmd = [*prefix, BIN, "bench", "--base-url", url, "--disable-tqdm", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=env)


def run_json(tmp_path, url, *args, name="r.json", **kw):
    out = tmp_path / name
    r = bench(url, *args, "--result-filename", str(out), **kw)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(out.read_text()), r


# ---- against the fake server ----

def test_client_sustains_many_thousands_of_tokens_per_second_on_one_core(fake, tmp_path):
    url = fake("fast")
    # one core for the client when taskset exists; CPU time is measured either way
    prefix = ("taskset", "-c", "0") if shutil.which("taskset") else ()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res, r = run_json(tmp_path, url, "--num-prompts", "200", "--random-input-len", "16",
                      "--random-output-len", "1000", "--max-concurrency", "32", prefix=prefix)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert res["completed"] == 200 and res["failed"] == 0
    assert res["total_output_tokens"] == 200 * 1000
    per_cpu_s = res["total_output_tokens"] / max(cpu, 1e-3)
    print(f"client: {res['total_output_tokens']} streamed tokens, {res['duration']:.2f} s wall, "
          f"{res['output_throughput']:.0f} tok/s, {cpu:.2f} s CPU, {per_cpu_s:.0f} tok per CPU-s")
    assert per_cpu_s > 20000  # "many thousands"; typically several hundred thousand


def test_seeded_poisson_arrivals_are_reproducible(fake, tmp_path):
    url = fake("fast")
    args = ("--num-prompts", "20", "--random-input-len", "4", "--random-output-len", "4",
            "--request-rate", "40", "--save-detailed")
    a, _ = run_json(tmp_path, url, *args, "--seed", "7", name="a.json")
    b, _ = run_json(tmp_path, url, *args, "--seed", "7", name="b.json")
    c, _ = run_json(tmp_path, url, *args, "--seed", "8", name="c.json")
    assert a["arrival_times"] == b["arrival_times"]
    assert a["arrival_times"] != c["arrival_times"]
    assert a["arrival_times"] == sorted(a["arrival_times"])
    assert a["arrival_times"][-1] == pytest.approx(20 / 40)  # n / rate, as vLLM scales them
    assert a["request_rate"] == 40
    # sent when they arrived (no concurrency limit), within the timer's resolution
    for arr, st in zip(a["arrival_times"], a["start_times"]):
        assert arr - 1e-3 <= st <= arr + 0.25


def test_goodput_and_rate_sweep(fake, tmp_path):
    url = fake("fast")
    res, r = run_json(tmp_path, url, "--num-prompts", "10", "--random-input-len", "4", "--random-output-len",
                      "8", "--goodput", "ttft:5000", "tpot:1000")
    assert res["request_goodput"] == pytest.approx(res["request_throughput"])
    assert res["goodput_slos_ms"] == {"ttft": 5000, "tpot": 1000}
    res, r = run_json(tmp_path, url, "--num-prompts", "10", "--random-input-len", "4", "--random-output-len",
                      "8", "--goodput", "ttft:5000", "--sweep-request-rates", "50,100", name="s.json")
    assert res["max_request_rate_meeting_slo"] == 100
    assert [s["request_rate"] for s in res["sweep"]] == [50, 100]
    assert "Highest rate meeting the SLOs" in r.stdout


@pytest.mark.parametrize("mode,needle", [
    ("malformed", "malformed SSE event"),
    ("die", "closed the connection mid-response"),
])
def test_broken_streams_are_counted_as_failures(fake, tmp_path, mode, needle):
    url = fake(mode)
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    r = bench(url, "--num-prompts", "6", "--random-input-len", "4", "--random-output-len", "50",
              "--max-concurrency", "3", "--result-filename", str(out), timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 1, r.stderr  # nothing completed
    assert needle in r.stderr, r.stderr
    res = json.loads(out.read_text())
    assert res["failed"] == 6 and res["completed"] == 0


def test_tokens_without_text_count_when_usage_says_so(fake, tmp_path):
    # A synthetic model's padding tokens detokenize to nothing: the request succeeded if the
    # server's usage counts its tokens (TTFT from the first choice event), failed if not.
    res, _ = run_json(tmp_path, fake("emptytext"), "--num-prompts", "4", "--random-input-len", "4",
                      "--random-output-len", "7", "--max-concurrency", "2")
    assert res["completed"] == 4 and res["failed"] == 0
    assert res["total_output_tokens"] == 28
    assert res["mean_ttft_ms"] > 0
    out = tmp_path / "n.json"
    r = bench(fake("notext"), "--num-prompts", "4", "--random-input-len", "4", "--random-output-len", "7",
              "--result-filename", str(out), timeout=60)
    assert r.returncode == 1 and "the stream carried no output text" in r.stderr, r.stderr
    assert json.loads(out.read_text())["failed"] == 4


def test_a_stalled_stream_times_out(fake, tmp_path):
    url = fake("stall")
    t0 = time.monotonic()
    r = bench(url, "--num-prompts", "2", "--random-input-len", "4", "--random-output-len", "50",
              "--request-timeout", "1", timeout=60)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 1
    assert "no complete response within 1 s (2 output chunks received)" in r.stderr, r.stderr


def test_unreachable_unauthorized_and_missing_file(fake, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = bench(f"http://127.0.0.1:{port}", "--num-prompts", "1", timeout=60)
    assert r.returncode == 1
    assert "cannot be used: cannot connect to" in r.stderr and "refused" in r.stderr.lower(), r.stderr
    r = bench(fake("unauthorized"), "--num-prompts", "1", timeout=60)
    assert r.returncode == 1
    assert "refused the API key (HTTP 401: Invalid API key)" in r.stderr, r.stderr
    url = fake("fast")
    r = bench(url, "--dataset-name", "file", "--dataset-path", str(tmp_path / "nope.jsonl"), timeout=60)
    assert r.returncode == 1 and "cannot open the dataset" in r.stderr and "nope.jsonl" in r.stderr, r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    r = bench(url, "--dataset-name", "file", "--dataset-path", str(bad), timeout=60)
    assert r.returncode == 1 and "bad.jsonl:2:" in r.stderr, r.stderr
    for args, needle in [
        (("--dataset-name", "sharegpt"), "--dataset-name is random, prefix, chat or file"),
        (("--goodput", "ttft"), "--goodput takes KEY:MILLISECONDS"),
        (("--num-prompts", "0"), "--num-prompts expects an integer"),
        (("--bogus",), "unknown option --bogus"),
        (("--sweep-request-rates", "2,1", "--goodput", "ttft:1"), "ascending"),
    ]:
        r = bench(url, *args, timeout=60)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)


def test_cost_report_of_a_fixed_result():
    r = subprocess.run([BIN, "bench", "--from-result", str(HERE / "data" / "result-fixed.json"),
                        "--api-prices", str(HERE / "data" / "prices.tsv"), "--gpu-hourly-usd", "3.5",
                        "--cpu-hourly-usd", "0.35"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # 360000 input tokens over 100 s = 3600 tok/s; 1800 output tok/s
    # GPU: 3.5 / (1800 * 3600) * 1e6 = 0.5401 per 1M output, 0.2701 per 1M input
    assert re.search(r"USD per 1M output tokens:\s+0\.5401", out), out
    assert re.search(r"USD per 1M input tokens:\s+0\.2701", out), out
    # a month is 730 h: 2555 USD, capacity 1800 * 3600 * 730 = 4.73B output tokens
    assert "2555.00 for 4.73B output tokens" in out
    # the API bills 4 + 2 * 1 = 6 USD per 1M output tokens at this mix: 2555 / 6 = 426M
    assert re.search(r"Four-One\s+1\.000\s+4\.000\s+6\.000\s+426M\n", out), out
    assert re.search(r"No-Output.*- \(no price\)", out), out
    # the CPU host at 0.35/h: a tenth of each
    assert re.search(r"USD per 1M output tokens:\s+0\.0540", out), out
    assert "255.50 for 4.73B" in out and re.search(r"Four-One.*42\.6M\n", out), out


# ---- against a real tokenmill serve ----

def test_random_workload_result_has_every_key_and_sane_values(real, tmp_path):
    res, r = run_json(tmp_path, real, "--num-prompts", "6", "--random-input-len", "24", "--random-output-len", "6",
                      "--max-concurrency", "3", "--cpu-hourly-usd", "0.10")
    for k in REQUIRED_KEYS:
        assert k in res, k
    assert res["completed"] == 6 and res["failed"] == 0
    assert res["total_input_tokens"] == 6 * 24  # token-id prompts: exactly as sent
    assert res["total_output_tokens"] == 6 * 6  # ignore_eos: every one to its length
    assert res["mean_ttft_ms"] > 0 and res["p99_ttft_ms"] >= res["median_ttft_ms"] > 0
    assert res["mean_e2el_ms"] > res["mean_ttft_ms"]
    assert res["mean_tpot_ms"] > 0 and res["mean_itl_ms"] > 0
    assert 1 <= res["max_concurrent_requests"] <= 3
    assert res["output_throughput"] == pytest.approx(36 / res["duration"])
    assert res["max_concurrency"] == 3 and res["request_rate"] == "inf"
    assert res["cost"]["gpu"]["usd_per_mtok_output"] > 0 and "cpu" in res["cost"]
    assert "Serving Benchmark Result" in r.stdout and "Cost at this load" in r.stdout


def test_prefix_workload_hits_the_prefix_cache(real, tmp_path):
    res, r = run_json(tmp_path, real, "--dataset-name", "prefix", "--prefix-repetition-prefix-len", "96",
                      "--prefix-repetition-suffix-len", "8", "--prefix-repetition-num-prefixes", "2",
                      "--prefix-repetition-output-len", "2", "--num-prompts", "6", "--max-concurrency", "1")
    assert res["completed"] == 6 and res["dataset_name"] == "prefix"
    assert res["total_input_tokens"] == 6 * 104
    # one at a time: after the first of each group, its 96-token prefix (6 pages) is cached
    assert res["prefix_cache_hit_rate"] > 0.5, res["prefix_cache_hit_rate"]


def test_chat_workload_resends_the_history(real, tmp_path):
    res, r = run_json(tmp_path, real, "--dataset-name", "chat", "--chat-num-turns", "2", "--random-input-len", "8",
                      "--random-output-len", "3", "--num-prompts", "4", "--max-concurrency", "2", "--save-detailed")
    assert res["completed"] == 4 and res["backend"] == "openai-chat"
    first, second = res["input_lens"][:2], res["input_lens"][2:]
    assert min(second) > max(first)  # the second turns carry the first turn and its answer
    assert res["prefix_cache_hit_rate"] > 0


def test_file_workload(real, tmp_path):
    ds = tmp_path / "prompts.jsonl"
    ds.write_text('{"prompt": "Name three colours.", "output_tokens": 3}\n{"prompt": [1, 2, 3, 4]}\n')
    res, r = run_json(tmp_path, real, "--dataset-name", "file", "--dataset-path", str(ds), "--num-prompts", "3",
                      "--custom-output-len", "2", "--ignore-eos", "--disable-shuffle")
    assert res["completed"] == 3
    assert res["total_output_tokens"] == 3 + 2 + 3  # the third request is the first line again


def test_api_key_and_a_server_that_dies_mid_run(tmp_path):
    proc, m = serve("--api-key", "sekrit", "--max-num-seqs", "4")
    try:
        url = m.group(1)
        r = bench(url, "--num-prompts", "1", timeout=60)
        assert r.returncode == 1 and "refused the API key (HTTP 401" in r.stderr, r.stderr
        res, _ = run_json(tmp_path, url, "--api-key", "sekrit", "--num-prompts", "1", "--random-input-len", "4",
                          "--random-output-len", "2")
        assert res["completed"] == 1
        env = dict(os.environ, OPENAI_API_KEY="sekrit")
        out = tmp_path / "dies.json"
        b = subprocess.Popen([BIN, "bench", "--base-url", url, "--disable-tqdm", "--num-prompts", "4",
                              "--random-input-len", "8", "--random-output-len", "4000", "--max-concurrency", "4",
                              "--result-filename", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        time.sleep(3)
        proc.kill()  # the server dies with 4 streams open
        stdout, stderr = b.communicate(timeout=60)
        assert b.returncode == 1, stderr
        res = json.loads(out.read_text())
        assert res["failed"] == 4 and res["completed"] == 0
        assert "closed the connection" in stderr or "ECONNRESET" in stderr, stderr
    finally:
        stop(proc)
