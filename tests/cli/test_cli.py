"""The tokenmill command line: generate streams exactly the generated text to stdout,
info describes the model, quantize converts it, and bad input gives a clear error."""
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("TM_BIN", str(ROOT / "build" / "tokenmill"))
MODEL = pathlib.Path.home() / ".cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="default model not fetched (scripts/fetch-model)")


def run(*args, timeout=300):
    return subprocess.run([BIN, *args], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_generate_greedy_is_deterministic_and_stdout_is_only_text():
    args = ["generate", "-m", str(MODEL), "-p", "The capital of France is", "-n", "16", "--temp", "0",
            "--threads", "2"]
    a, b = run(*args), run(*args)
    assert a.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    out = a.stdout.decode()
    assert "The capital of France is" not in out  # the prompt goes nowhere near stdout
    assert "Paris" in out
    err = a.stderr.decode()
    assert "prompt" in err and "tok/s" in err  # stats go to stderr
    # the prompt is echoed there, after the log lines (the device chosen)
    echo = "".join(l for l in err.splitlines(keepends=True) if not l.startswith("tokenmill info: "))
    assert echo.startswith("The capital of France is"), err
    assert "generate: device cpu" in err
    assert "first token after" in err
    # Greedy output for -n 8 is the start of -n 16's: nothing is added after the text.
    short = run("generate", "-m", str(MODEL), "-p", "The capital of France is", "-n", "8", "--temp", "0",
                "--threads", "2")
    assert short.returncode == 0, short.stderr.decode()
    assert 0 < len(short.stdout) < len(a.stdout) and a.stdout.startswith(short.stdout)


def generated_tokens(stderr):
    m = re.search(r"generated (\d+) tokens", stderr.decode())
    assert m, stderr.decode()
    return int(m.group(1))


def test_generate_stop_string_ends_the_text_right_before_it():
    base = ["generate", "-m", str(MODEL), "-p", "The capital of France is", "--temp", "0", "--threads", "2"]
    full = run(*base, "-n", "32")
    assert full.returncode == 0, full.stderr.decode()
    text = full.stdout.decode()
    assert generated_tokens(full.stderr) == 32 and len(text) > 20, text
    # A stop string from the middle of the greedy text: stdout is exactly the text before
    # its first occurrence (no stop string, no newline), and generation stops there.
    stop = text[len(text) // 2:len(text) // 2 + 6]
    cut = text.index(stop)
    r = run(*base, "-n", "32", "--stop", "never-in-this-text", "--stop", stop)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == text[:cut], (r.stdout, text, stop)
    assert generated_tokens(r.stderr) < 32
    # A stop string at the very start leaves stdout empty: not even a newline.
    r = run(*base, "-n", "32", "--stop", text[:3])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b""
    assert generated_tokens(r.stderr) < 32


def test_generate_seed_reproducible():
    args = ["generate", "-p", "Once upon a time", "-n", "24", "--temp", "1.0", "--seed"]
    a, b, c = run(*args, "5"), run(*args, "5"), run(*args, "6")
    assert a.returncode == 0 and b.returncode == 0 and c.returncode == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_generate_bad_arguments():
    for args, needle in [
        (["generate"], "-p TEXT is required"),
        (["generate", "-p", "hi", "-n", "abc"], "-n expects an integer"),
        (["generate", "-p", "hi", "--temp", "-1"], "--temp expects a number"),
        (["generate", "-p", "hi", "--bogus", "1"], "unknown option"),
        (["generate", "-p", "hi", "--stop", ""], "--stop needs a non-empty string"),
        (["generate", "-p", "hi"] + ["--stop", "x"] * 5, "at most 4 --stop strings"),
        (["generate", "-p", "hi", "-n", "9000"], "exceeds the context"),
        (["generate", "-m", "/nonexistent.gguf", "-p", "hi"], "/nonexistent.gguf"),
        (["frobnicate"], "unknown command"),
    ]:
        r = run(*args)
        assert r.returncode != 0, args
        assert needle in r.stderr.decode(), (args, r.stderr.decode())


def test_info_describes_the_model():
    r = run("info", str(MODEL))
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    for needle in ["architecture:  llama", "layers:        30", "dim:           576",
                   "heads:         9 (kv 3, head_dim 64)", "vocab:         49152", "gpt2", "smollm",
                   "q4_1", "q8_0", "f32"]:
        assert needle in out, needle


def test_corrupt_and_truncated_model_files_fail_cleanly(tmp_path):
    data = MODEL.read_bytes()
    cases = {
        "empty.gguf": b"",
        "magic.gguf": b"GGUX" + data[4:4096],
        "truncated_header.gguf": data[:100],
        "truncated_data.gguf": data[: len(data) // 2],
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        r = run("info", str(p))
        assert r.returncode == 1, name
        err = r.stderr.decode()
        assert name in err and "tokenmill:" in err, (name, err)
        assert len(err.strip().splitlines()) <= 2, err  # one clear line, no crash dump


def test_quantize_roundtrip_runs(tmp_path):
    out = tmp_path / "smol-q8_0.gguf"
    r = run("quantize", str(MODEL), str(out), "q8_0")
    assert r.returncode == 0, r.stderr.decode()
    info = run("info", str(out))
    assert info.returncode == 0, info.stderr.decode()
    assert "q8_0" in info.stdout.decode() and "q4_1" not in info.stdout.decode()
    g = run("generate", "-m", str(out), "-p", "The capital of France is", "-n", "8", "--temp", "0")
    assert g.returncode == 0 and "Paris" in g.stdout.decode()
    bad = run("quantize", str(MODEL), str(tmp_path / "x.gguf"), "iq4_nl")
    assert bad.returncode != 0 and "unsupported target type" in bad.stderr.decode()
    assert "q4_k_m" in bad.stderr.decode()  # the message lists the targets


def test_quantize_q4_k_m_mix_runs(tmp_path):
    # llama.cpp's Q4_K_M recipe on the default model (576-wide rows): Q5_0 fallbacks, Q4_K and
    # Q6_K on ffn_down, Q8_0 for the bumped attn_v and the tied token_embd.
    out = tmp_path / "smol-q4_k_m.gguf"
    r = run("quantize", str(MODEL), str(out), "q4_k_m")
    assert r.returncode == 0, r.stderr.decode()
    info = run("info", str(out)).stdout.decode()
    for t in ("q5_0", "q4_k", "q6_k", "q8_0"):
        assert re.search(rf"^\s+{t}\s+\d+ tensors", info, re.M), (t, info)
    g = run("generate", "-m", str(out), "-p", "The capital of France is", "-n", "8", "--temp", "0")
    assert g.returncode == 0 and "Paris" in g.stdout.decode(), g.stdout.decode()


# --- devices and synthetic models ------------------------------------------------------

SYNTH_GEN = ["generate", "--synthetic", "tiny:q4_0", "-p", "Hello world", "-n", "8", "--temp", "0",
             "--threads", "2"]


def chosen_device(stderr):
    m = re.search(r"device (cpu|cuda)\b", stderr.decode())
    assert m, stderr.decode()
    return m.group(1)


@pytest.fixture(scope="module")
def cuda_usable():
    """Whether --device auto picks CUDA on this machine (then the no-GPU cases skip)."""
    r = run(*SYNTH_GEN, "--device", "auto")
    assert r.returncode == 0, r.stderr.decode()
    return chosen_device(r.stderr) == "cuda"


def test_device_cpu_says_so_with_its_memory():
    r = run(*SYNTH_GEN, "--device", "cpu")
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    line = next(l for l in err.splitlines() if "device cpu" in l)
    assert "auto" not in line and "threads" in line and re.search(r"host memory [\d.]+ GiB free of [\d.]+ GiB", line), line


def test_device_auto_falls_back_to_cpu_and_says_why(cuda_usable):
    if cuda_usable:
        pytest.skip("a usable CUDA device is here: auto picks it")
    r = run(*SYNTH_GEN, "--device", "auto")
    assert r.returncode == 0, r.stderr.decode()
    line = next(l for l in r.stderr.decode().splitlines() if "device cpu" in l)
    assert "auto: no usable CUDA device" in line, line


def test_device_cuda_without_a_gpu_is_one_clear_line(cuda_usable):
    if cuda_usable:
        pytest.skip("a usable CUDA device is here")
    for args in (SYNTH_GEN + ["--device", "cuda"],
                 ["serve", "--synthetic", "tiny:q4_0", "--device", "cuda", "--port", "0"]):
        r = run(*args, timeout=60)
        assert r.returncode == 1, (args, r.stderr.decode())
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "--device cuda:" in lines[0], lines
        assert r.stdout == b""


def test_generate_synthetic_runs_deterministically_and_warns():
    a, b = run(*SYNTH_GEN, "--device", "cpu"), run(*SYNTH_GEN, "--device", "cpu")
    assert a.returncode == 0, a.stderr.decode()
    err = a.stderr.decode()
    assert "synthetic model (tiny:q4_0" in err and "answers are meaningless" in err, err
    assert 1 <= generated_tokens(a.stderr) <= 8
    assert a.stdout == b.stdout  # seed 0 weights, greedy: the same text every time


def test_serve_synthetic_startup_line_says_meaningless():
    p = subprocess.Popen([BIN, "serve", "--synthetic", "tiny:q4_0", "--port", "0", "--threads", "2",
                          "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        line = p.stdout.readline().decode()  # the startup line comes once serving starts
        assert "serving tiny:q4_0 on http://127.0.0.1:" in line, line
        assert "synthetic model tiny:q4_0" in line and "answers are meaningless" in line, line
    finally:
        p.terminate()
        p.wait(timeout=30)
    err = p.stderr.read().decode()
    assert "device cpu" in err and "KV cache 256 MiB" in err, err


def test_synth_writes_a_file_that_info_reads(tmp_path):
    out = tmp_path / "tq.gguf"
    r = run("synth", "tiny-qwen2", "q8_0", str(out), "--layers", "1", "--seed", "3")
    assert r.returncode == 0, r.stderr.decode()
    assert "wrote" in r.stderr.decode() and not (tmp_path / "tq.gguf.tmp").exists()
    info = run("info", str(out))
    assert info.returncode == 0, info.stderr.decode()
    text = info.stdout.decode()
    for needle in ["architecture:  qwen2", "layers:        1", "dim:           256", "vocab:         49408",
                   "tied output:   yes", "qkv bias:      yes", "synthetic:     tiny-qwen2:q8_0 seed 3 layers 1",
                   "49408 tokens", "q8_0", "f32"]:
        assert needle in text, (needle, text)
    # the same options write the same bytes
    again = tmp_path / "again.gguf"
    assert run("synth", "tiny-qwen2", "q8_0", str(again), "--layers", "1", "--seed", "3").returncode == 0
    assert again.read_bytes() == out.read_bytes()


def test_synthetic_and_device_bad_names(tmp_path):
    x = str(tmp_path / "x.gguf")
    for args, needle in [
        (["synth", "llama9-1t", "q4_0", x], "unknown preset 'llama9-1t' (presets: tiny,"),
        (["synth", "tiny", "iq4_nl", x], "unknown weight type 'iq4_nl' (types: f32,"),
        (["synth", "tiny", "q4_0"], "usage: tokenmill synth"),
        (["synth", "tiny", "q4_0", x, "--layers", "0"], "--layers expects an integer"),
        (["generate", "--synthetic", "tiny", "-p", "hi"], "'tiny' is not PRESET:TYPE"),
        (["generate", "--synthetic", "tiny:q4_0", "-m", str(MODEL), "-p", "hi"], "not both"),
        (["generate", "--device", "tpu", "-p", "hi"], "--device must be auto, cpu or cuda"),
        (["serve", "--synthetic", "nope:f16"], "unknown preset 'nope'"),
        (["serve", "--device", "tpu"], "--device must be auto, cpu or cuda"),
    ]:
        r = run(*args, timeout=60)
        assert r.returncode == 2, (args, r.returncode, r.stderr.decode())
        assert needle in r.stderr.decode(), (args, r.stderr.decode())
    assert not os.path.exists(x)
