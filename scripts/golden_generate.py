#!/usr/bin/env python3
"""Golden generation data from llama.cpp (PyPI llama-cpp-python) for tests/models/test_golden.

For each prompt it records what llama.cpp computes on the same GGUF file tokenmill loads:
  - the prompt token ids (llama.cpp tokenizer, special tokens parsed, BOS as the model says),
  - the greedy (argmax of the raw logits) continuation of N_GEN tokens, fed back one at a
    time; generation does not stop at EOS/<|im_end|> so both sides decode the same length,
  - the top-5 (id, raw logit) at the first generated position,
  - per generated step the chosen token's raw logit and its gap to the second-best logit, so
    the test can check every step and tell a near-tie flip (numerics) from a real error.

Usage: golden_generate.py [--flash-attn --out DIR] MODEL.gguf [MORE.gguf ...]
       golden_generate.py --name NAME --chat gemma MODEL.gguf
  The first model writes tests/golden/generate-smollm2.json. Every further model (and, when
  only one is given, the Q8_0 / F16 siblings named <stem>.Q8_0.gguf / <stem>.F16.gguf that
  `tokenmill quantize` writes next to it) writes generate-smollm2-<type>.json; missing files
  are skipped with a note.
  --name NAME --chat FORMAT: one model, written to generate-NAME.json, its chat prompts in
  FORMAT (chatml, the default model's, or gemma: <start_of_turn>user ... <end_of_turn>,
  system text folded into the first user turn as Gemma's template does).

--flash-attn --out DIR: the same with llama.cpp's flash attention on, written to DIR (not
  tests/golden): llama.cpp against itself, for scripts/golden_compare.py.

Determinism: one thread, n_batch = n_ubatch = n_ctx so a prompt is a single ubatch, no flash
attention, CPU only. Runs take about a minute on one core.
"""
import hashlib
import json
import os
import re
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama

import llama_cpp_plain  # noqa: F401,E402 (no AMX / repacked weight buffers)

N_GEN = 48        # greedy tokens per prompt
N_TOP = 5         # logits recorded at the first generated position
N_CTX = 2048      # > longest prompt + N_GEN
N_THREADS = 1     # fixed: results must not depend on the machine's core count
LONG_TARGET = 1000  # tokens in the long prompt

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "golden")

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(turns):
    """turns: [(role, text)] -> ChatML text ending with an open assistant turn."""
    s = "".join(f"<|im_start|>{r}\n{t}<|im_end|>\n" for r, t in turns)
    return s + "<|im_start|>assistant\n"


def gemma(turns):
    """turns -> Gemma's turns (assistant is "model"; a system text opens the first user turn)."""
    s, system = "", None
    for r, t in turns:
        if r == "system":
            system = t
            continue
        if r == "user" and system is not None:
            t, system = f"{system}\n\n{t}", None
        s += f"<start_of_turn>{'model' if r == 'assistant' else r}\n{t}<end_of_turn>\n"
    return s + "<start_of_turn>model\n"


CHAT = chatml  # --chat


# A paragraph written for this file; the long prompt repeats it with numbered variations
# (different mill, river, year and goods each time) so it is long without being one loop.
LONG_BASE = ("Section {n}. The mill at {place} stood where the {river} bent twice before "
             "reaching the sea. In {year} the miller kept a ledger of every sack of {goods} "
             "that came through the door, and each evening he wrote down the weight, the "
             "name of the farmer and the price agreed at the gate. The ledger shows that the "
             "wheel turned on {days} days that year, stopping only when the water froze or "
             "when the stones had to be dressed again. ")
PLACES = ["Ashford", "Brennick", "Calder Vale", "Dunmore", "Elsworth", "Fairhaven", "Glenrothes",
          "Holloway", "Ivybridge", "Kestrel Moor", "Langdale", "Marrow End", "Northwick",
          "Oakhurst", "Pennington", "Quarry Hill", "Redbank", "Stoneleigh"]
RIVERS = ["Tane", "Wyre", "Lune", "Esk", "Ouse", "Dove"]
GOODS = ["wheat", "barley", "oats", "rye", "maize"]


def long_prompt(llm):
    """Deterministic ~LONG_TARGET-token text: whole sections until the target is passed."""
    text = "A history of the river mills, compiled from their ledgers.\n\n"
    for n in range(1, 200):  # bounded; ~110 tokens per section
        text += LONG_BASE.format(n=n, place=PLACES[n % len(PLACES)], river=RIVERS[n % len(RIVERS)],
                                 year=1700 + 7 * n, goods=GOODS[n % len(GOODS)], days=200 + 11 * n % 150)
        if len(llm.tokenize(text.encode(), add_bos=True, special=True)) >= LONG_TARGET - 60:
            break
    return text + "\nSummary of the ledgers: the mill that turned on the most days was"


def prompts(llm):
    return [
        ("short-fact", "The capital of France is"),
        ("short-story", "Once upon a time, in a small village by the sea,"),
        ("single-word", "Hello"),
        ("counting", "1, 2, 3, 4, 5, 6, 7,"),
        ("code-python", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
        ("code-c", "#include <stdio.h>\n\nint main(void) {\n    int sum = 0;\n    for (int i = 0; i < 10; i++) {\n"),
        ("french", "La tour Eiffel est un monument de Paris qui"),
        ("german", "Die Hauptstadt von Deutschland ist Berlin. Die Stadt hat"),
        ("chinese", "中国的首都是北京。北京是一座"),
        ("japanese", "日本の首都は東京です。東京は"),
        ("russian", "Москва — столица России. Это город, в котором"),
        ("whitespace-emoji", "  Tabs\tand  spaces,\n\nnew lines 🙂 and symbols: <b>&amp;</b> $x^2$ "),
        ("chat-single", CHAT([("system", SYSTEM), ("user", "What is the capital of France?")])),
        ("chat-multi", CHAT([("system", SYSTEM), ("user", "Give me three colors."),
                               ("assistant", "Red, green and blue."),
                               ("user", "Now translate them into German.")])),
        ("chat-code", CHAT([("user", "Write a Python function that reverses a string.")])),
        ("long", long_prompt(llm)),
    ]


def model_type(path):
    m = re.search(r"\.([A-Za-z0-9_]+)\.gguf$", os.path.basename(path))
    return m.group(1).lower() if m else "unknown"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_prompt(llm, name, text):
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    assert len(ids) + N_GEN <= N_CTX, name
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    top = np.argsort(-logits, kind="stable")[:N_TOP]
    top5 = [[int(i), float(logits[i])] for i in top]
    gen, gen_logits, margins = [], [], []
    for step in range(N_GEN):
        if step > 0:
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        best2 = np.argsort(-logits, kind="stable")[:2]
        tok = int(best2[0])  # argmax; ties go to the lower id, as np.argmax does
        gen.append(tok)
        gen_logits.append(round(float(logits[tok]), 5))
        margins.append(round(float(logits[best2[0]] - logits[best2[1]]), 5))
        if step + 1 < N_GEN:
            llm.eval([tok])
    return {
        "name": name,
        "text": text,
        "prompt_ids": ids,
        "greedy_ids": gen,
        "greedy_text": llm.detokenize(gen, special=True).decode("utf-8", errors="replace"),
        "greedy_logits": gen_logits,
        "top5_first": top5,
        "margins": margins,
    }


FLASH_ATTN = False  # --flash-attn


def generate(path, out_name):
    t0 = time.time()
    # logits_all keeps every position's raw logits in llm.scores (needed for the prompt's
    # last row); n_batch = n_ubatch = n_ctx makes a prompt one ubatch.
    llm = Llama(model_path=path, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=N_THREADS,
                n_threads_batch=N_THREADS, logits_all=True, flash_attn=FLASH_ATTN, n_gpu_layers=0,
                seed=0, verbose=False)
    records = [run_prompt(llm, name, text) for name, text in prompts(llm)]
    doc = {
        "generator": "scripts/golden_generate.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "model_file": os.path.basename(path),
        "model_type": model_type(path),
        "model_sha256": sha256(path),
        "model_bytes": os.path.getsize(path),
        "n_vocab": llm.n_vocab(),
        "add_bos": bool(llm._model.add_bos_token()) if hasattr(llm._model, "add_bos_token") else None,
        "settings": {"n_ctx": N_CTX, "n_batch": N_CTX, "n_ubatch": N_CTX, "n_threads": N_THREADS,
                     "flash_attn": FLASH_ATTN, "use_extra_bufts": False, "sampling": "greedy argmax of raw logits, no EOS stop"},
        "n_gen": N_GEN,
        "prompts": records,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    out = os.path.join(OUT_DIR, out_name)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    lens = [len(r["prompt_ids"]) for r in records]
    print(f"golden_generate: {out} ({len(records)} prompts, {min(lens)}..{max(lens)} prompt "
          f"tokens, {time.time() - t0:.0f}s)", file=sys.stderr)
    del llm


def main(argv):
    global FLASH_ATTN, OUT_DIR, CHAT
    if len(argv) >= 4 and argv[1] == "--flash-attn" and argv[2] == "--out":
        FLASH_ATTN, OUT_DIR = True, argv[3]
        argv = argv[:1] + argv[4:]
    if len(argv) == 6 and argv[1] == "--name" and argv[3] == "--chat":
        name, CHAT = argv[2], {"chatml": chatml, "gemma": gemma}[argv[4]]
        if not os.path.isfile(argv[5]):
            print(f"golden_generate: {argv[5]}: no such file", file=sys.stderr)
            return 1
        generate(argv[5], f"generate-{name}.json")
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    first = argv[1]
    extra = argv[2:]
    if not extra:
        stem = re.sub(r"\.[A-Za-z0-9_]+\.gguf$", "", first)
        extra = [f"{stem}.Q8_0.gguf", f"{stem}.F16.gguf"]
    if not os.path.isfile(first):
        print(f"golden_generate: {first}: no such file", file=sys.stderr)
        return 1
    generate(first, "generate-smollm2.json")
    for path in extra:
        if not os.path.isfile(path):
            print(f"golden_generate: skipping {path} (not there; make it with "
                  f"`build/tokenmill quantize {first} {path} {model_type(path)}`)", file=sys.stderr)
            continue
        generate(path, f"generate-smollm2-{model_type(path)}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
