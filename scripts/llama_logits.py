#!/usr/bin/env python3
"""llama.cpp's raw logits (PyPI llama-cpp-python) for token ids on a GGUF file, so a test can
compare tokenmill's forward pass with llama.cpp's on the same file (tests/models/test_synth
does, on `tokenmill synth` files).

Usage: llama_logits.py MODEL.gguf ID,ID,... OUT.f32
  Evaluates the ids as one sequence in one batch and writes the logits of every position,
  (n_ids, n_vocab) little-endian float32, to OUT.f32. Prints one JSON line to stdout:
  {"n_tokens": N, "n_vocab": V, "llama_cpp_python_version": "..."}.
  Exit status 3 (and one line on stderr) when llama_cpp cannot be imported, so a caller can
  tell "not installed" (skip) from a failure.

Settings as scripts/golden_generate.py: one thread, CPU only, no flash attention, llama.cpp's
extra buffer types (AMX, repacking) off, n_batch = n_ubatch = n_ctx.
"""
import json
import sys

try:
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama
except ImportError as e:  # the caller skips
    print(f"llama_logits: llama-cpp-python is not installed ({e}); scripts/make-golden installs it",
          file=sys.stderr)
    sys.exit(3)

import llama_cpp_plain  # noqa: F401,E402 (no AMX / repacked weight buffers)


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, ids_arg, out = argv[1], argv[2], argv[3]
    ids = [int(x) for x in ids_arg.split(",") if x]
    n_ctx = max(64, len(ids))
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=1,
                n_threads_batch=1, logits_all=True, flash_attn=False, n_gpu_layers=0, seed=0,
                verbose=False)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype="<f4")
    logits.tofile(out)
    print(json.dumps({"n_tokens": len(ids), "n_vocab": int(llm.n_vocab()),
                      "llama_cpp_python_version": llama_cpp.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
