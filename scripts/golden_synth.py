#!/usr/bin/env python3
"""llama.cpp's logits on `tokenmill synth` models of every architecture, for
tests/models/test_synth_golden (so CI checks the forward pass of models nobody can download
here without llama.cpp).

Usage: golden_synth.py TOKENMILL [PRESET ...]   (run by scripts/make-golden)

For each tiny-* preset (or the ones named) and each weight type in TYPES (q4_k_m: the
llama.cpp mix, each matrix in the type its recipe gives it), it writes the model with
`TOKENMILL synth PRESET TYPE FILE --seed SEED`, evaluates IDS as one sequence in
one batch with llama.cpp (llama-cpp-python; one thread, CPU only, no flash attention, no
extra buffer types, as golden_generate.py) and records, per position:
  - llama.cpp's argmax and the gap to its second-best logit (the near-tie rule),
  - its TOP best (id, logit),
  - its logits at COLUMNS, a fixed spread of the vocabulary,
and the CRC-32 of the model's tensor data, so the test knows the model it regenerates is
the one llama.cpp saw. Writes tests/golden/synth-<preset>.json.
"""
import json
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import gguf
import llama_cpp
from llama_cpp import Llama

import llama_cpp_plain  # noqa: F401,E402 (no AMX / repacked weight buffers)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "golden")

PRESETS = ["tiny", "tiny-mistral", "tiny-qwen2", "tiny-qwen3", "tiny-phi3", "tiny-gemma2", "tiny-gemma3"]
TYPES = ["f16", "q8_0", "q4_k_m", "q5_k", "q6_k"]
SEED = 11
# ordinary tokens, BOS, a padding token (49300 > the default tokenizer's 49152); 12
# positions, so the Gemma presets' 4-key windows slide over 8 of them
IDS = [1, 504, 3458, 314, 2205, 30, 49300, 12, 7, 1337, 80, 2]
N_COLUMNS = 96
TOP = 8


def columns(n_vocab):
    """N_COLUMNS ids spread over the vocabulary (a fixed stride, not chosen by results)."""
    return sorted({(j * 515 + 3) % n_vocab for j in range(N_COLUMNS)})


def tensor_crc(path):
    """CRC-32 of every tensor's bytes in file order (test_synth_golden computes the same)."""
    r = gguf.GGUFReader(path)
    crc = 0
    for t in r.tensors:
        crc = zlib.crc32(np.asarray(t.data).tobytes(), crc)
    return crc


def run_case(tokenmill, preset, typ, tmp):
    path = os.path.join(tmp, f"{preset}-{typ}.gguf")
    subprocess.run([tokenmill, "synth", preset, typ, path, "--seed", str(SEED)], check=True,
                   stdout=subprocess.DEVNULL)
    crc = tensor_crc(path)
    n_ctx = 64
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=1, n_threads_batch=1,
                logits_all=True, flash_attn=False, n_gpu_layers=0, seed=0, verbose=False)
    llm.eval(IDS)
    logits = np.array(llm.scores[: len(IDS)], dtype=np.float32)
    n_vocab = int(llm.n_vocab())
    del llm
    os.remove(path)
    cols = columns(n_vocab)
    top1, margin, top, at = [], [], [], []
    for row in logits:
        order = np.argsort(-row, kind="stable")
        top1.append(int(order[0]))
        margin.append(round(float(row[order[0]] - row[order[1]]), 5))
        top.append([[int(i), round(float(row[i]), 4)] for i in order[:TOP]])
        at.append([round(float(row[c]), 3) for c in cols])
    return {"type": typ, "tensor_crc32": crc, "n_vocab": n_vocab, "top1": top1, "margin": margin,
            "top": top, "logits": at}, cols


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    tokenmill = argv[1]
    presets = argv[2:] or PRESETS
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            cases, cols = [], None
            for typ in TYPES:
                case, cols = run_case(tokenmill, preset, typ, tmp)
                cases.append(case)
            doc = {"generator": "scripts/golden_synth.py", "llama_cpp_python_version": llama_cpp.__version__,
                   "preset": preset, "seed": SEED, "ids": IDS, "columns": cols, "cases": cases}
            out = os.path.join(OUT_DIR, f"synth-{preset}.json")
            with open(out, "w", encoding="utf-8") as f:
                # one line per array of numbers keeps the file short and diffable
                f.write(json.dumps(doc, separators=(",", ":")).replace('{"type"', '\n{"type"'))
                f.write("\n")
            print(f"golden_synth: {out} ({len(cases)} types)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
