#!/usr/bin/env python3
"""Compares the greedy continuations of two golden generation files (golden_generate.py),
prompt by prompt: the first step where they differ and the margin between the best two
logits there in the first file. Used to measure how far llama.cpp agrees with itself
(flash attention on against off) under the test's rule "the first 32 greedy tokens".

Usage: golden_compare.py A.json B.json [N_STRICT]   (N_STRICT defaults to 32)
Exit status 0; the last line counts the prompts that differ within N_STRICT steps."""
import json
import sys


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        a = json.load(f)
    with open(argv[2], encoding="utf-8") as f:
        b = json.load(f)
    n_strict = int(argv[3]) if len(argv) > 3 else 32
    by_name = {p["name"]: p for p in b["prompts"]}
    n_early = 0
    for pa in a["prompts"]:
        pb = by_name.get(pa["name"])
        if pb is None:
            print(f"{pa['name']:18s} missing in {argv[2]}")
            continue
        first = next((i for i, (x, y) in enumerate(zip(pa["greedy_ids"], pb["greedy_ids"])) if x != y), None)
        if first is None:
            print(f"{pa['name']:18s} all {min(len(pa['greedy_ids']), len(pb['greedy_ids']))} greedy tokens identical")
            continue
        n_early += first < n_strict
        print(f"{pa['name']:18s} first greedy difference at step {first:2d} (margin {pa['margins'][first]:.3f})")
    print(f"prompts that differ within the first {n_strict} steps: {n_early} of {len(a['prompts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
