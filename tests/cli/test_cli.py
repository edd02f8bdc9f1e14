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
    assert err.startswith("The capital of France is")  # the prompt is echoed there
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
    bad = run("quantize", str(MODEL), str(tmp_path / "x.gguf"), "q3_k")
    assert bad.returncode != 0 and "unsupported target type" in bad.stderr.decode()
