#!/usr/bin/env python3
"""Golden data for the regex front end (tests/server/test_regex_gbnf.cc).

For each regex, candidate strings (the given examples, their one-character mutations and
random strings over the regex's own characters plus a few others) labelled with Python's
re.fullmatch, the reference the grammar is held to. Deterministic (fixed seed).

    .venv/bin/python scripts/golden_regex.py > tests/server/data/regex_golden.json
"""
import json
import random
import re

# (regex, examples that match)
CASES = [
    (r"abc", ["abc"]),
    (r"a|bc|", ["a", "bc", ""]),
    (r"[a-c]+x?", ["a", "abcx", "cc"]),
    (r"[^a-c]{2,3}", ["xy", "éé€", "  \n"]),
    (r"\d{3}-\d{4}", ["555-1234"]),
    (r"\w+@\w+\.com", ["al@enigma.com", "a_1@b2.com"]),
    (r"\s*(yes|no)\s*", ["yes", " no\t", "\nyes"]),
    (r"[A-Z][a-z]*( [A-Z][a-z]*)*", ["Ada", "Ada Lovelace"]),
    (r"(ab)*c", ["c", "abababc"]),
    (r"(?:x|yz){2}", ["xx", "yzx", "yzyz"]),
    (r"(?P<year>\d{4})-(?P<m>0[1-9]|1[0-2])", ["2024-01", "1999-12"]),
    (r"^hello$", ["hello"]),
    (r"a.c", ["abc", "a€c", "a c"]),
    (r"[.]+\.\*", ["..*"]),
    (r"\D\W\S", ["a b", "x,y"]),
    (r"[\d\s]+", ["1 2", "\t9"]),
    (r"[^\d]+", ["abc", "é"]),
    (r"(a|b)*?c{1,}?", ["c", "abcc"]),
    (r"[\u00e9-\u00ff]\x41\u20ac", ["éA€", "ÿA€"]),
    (r"\"quoted\"\\", ["\"quoted\"\\"]),
    (r"[\"\\\n]{1,3}", ["\"", "\\\n", "\n\n\n"]),
    (r"a{2}b{,2}c{1,}", ["aac", "aabbc", "aabc"]),
    (r"x{", ["x{"]),
    (r"[-a]+[a-]+", ["--", "a-a"]),
    (r"[]a]", ["]", "a"]),
    (r"(\+|-)?[0-9]+(\.[0-9]+)?", ["12", "-0.5", "+3"]),
    (r"[0-9a-f]{8}-[0-9a-f]{4}", ["deadbeef-0123"]),
    (r"(red|green|blue)(,(red|green|blue))*", ["red", "red,blue,green"]),
    (r"😀+|\U0001F600x", ["😀😀", "😀x"]),
    (r"[^\n]*\n", ["abc\n", "\n"]),
    (r"(a(b(c(d)?)?)?)?", ["", "a", "abcd"]),
    (r"[\t -~]{0,5}", ["", "hi there"[:5], "~"]),
    (r"\x00?[\x01-\x1f]", ["\x01", "\x00\x1f"]),
    (r"(?#a comment)ok", ["ok"]),
]

# Neighbours of the classes the regexes use (':' and '/' border the digits, '@' and '['
# the capitals, '`' and '{' the small letters), so an off-by-one range shows.
EXTRA = ["a", "b", "c", "x", "Z", "0", "9", "5", " ", "\t", "\n", "_", "-", ".", ",", "é", "€",
         "😀", "\"", "\\", "{", "@", "\x00", "\x1f", ":", "/", "[", "`", "A", "~", "\x7f", "\x0b"]


def alphabet(rx, examples):
    chars = set(EXTRA)
    for e in examples:
        chars.update(e)
    chars.update(ch for ch in rx if ch.isprintable())
    return sorted(chars)


def candidates(rng, rx, examples):
    out = list(examples)
    alpha = alphabet(rx, examples)
    for e in examples:
        for _ in range(12):
            s = list(e)
            op = rng.randrange(3)
            pos = rng.randrange(len(s) + 1)
            if op == 0:
                s.insert(pos, rng.choice(alpha))
            elif op == 1 and s:
                del s[min(pos, len(s) - 1)]
            elif s:
                s[min(pos, len(s) - 1)] = rng.choice(alpha)
            out.append("".join(s))
    for _ in range(80):
        n = rng.randrange(0, 9)
        out.append("".join(rng.choice(alpha) for _ in range(n)))
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def main():
    rng = random.Random(20)
    cases = []
    for rx, examples in CASES:
        cre = re.compile(rx)
        for e in examples:
            assert cre.fullmatch(e), (rx, e)
        strings = [[s, bool(cre.fullmatch(s))] for s in candidates(rng, rx, examples)]
        cases.append({"re": rx, "strings": strings})
    print(json.dumps({"generator": "scripts/golden_regex.py", "cases": cases}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
