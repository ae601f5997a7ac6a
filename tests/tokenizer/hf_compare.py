#!/usr/bin/env python3
# Conformance against HF `tokenizers`: encodes every paragraph/line of the shared corpora
# (Gutenberg, Tiny Shakespeare, GSM8K questions and answers, PIQA goals and solutions)
# plus seeded random Unicode strings with HF and with our binary, and compares the ids.
# Exit 0 all equal, 1 mismatch, 77 skip (no `tokenizers` module or no shared data).
# Usage: hf_compare.py --binary PATH --data SHARED_DATA [--tokenizer FILE]
#   PATH is ds-tokenize (run as `encode --jsonl --tokenizer FILE`).
import argparse
import json
import os
import random
import subprocess
import sys

SKIP = 77


def paragraphs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [p for p in text.split("\n\n") if p]


def corpus_texts(data):
    texts = []
    gdir = os.path.join(data, "gutenberg")
    for name in sorted(os.listdir(gdir)):
        if name.endswith(".txt"):
            texts += paragraphs(os.path.join(gdir, name))
    texts += paragraphs(os.path.join(data, "tinyshakespeare", "input.txt"))
    with open(os.path.join(data, "gsm8k", "train.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts += [rec["question"], rec["answer"]]
    piqa = os.path.join(data, "piqa", "valid.jsonl")
    if os.path.exists(piqa):
        with open(piqa, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                texts += [rec.get("goal", ""), rec.get("sol1", ""), rec.get("sol2", "")]
    return [t for t in texts if t]


def random_texts(n, seed=20241226):
    pool = (list("aZq07  \t\n\r.,!('\"-_<>|") + ["é", "ß", "\u0301", "\u00a0", "\u0085",
            "\u3000", "中", "文", "の", "カ", "한", "🌍", "😀", "\x01", "\u2028", "\u200b",
            "١", "Ж", "ה", "\U00010348", "\uff5c", "½", "²", "\u180e", "𝟘", "Ⅻ",
            # assigned after Unicode 14 (PCRE2 10.42's tables): So, Lo (CJK ext. H, Garay),
            # Nd, Mc, Lu
            "\U0001fae8", "\U00031350", "\U00010d4a", "\U0001e4f0", "\u0cf3", "\u1c89"])
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def run_ours(binary, tokenizer, texts):
    cmd = [binary, "encode", "--jsonl", "--tokenizer", tokenizer]
    inp = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    res = subprocess.run(cmd, input=inp.encode("utf-8"), capture_output=True, check=False)
    if res.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} exited {res.returncode}: {res.stderr.decode()[:500]}")
        sys.exit(1)
    return [json.loads(line)["ids"] for line in res.stdout.decode("utf-8").splitlines() if line]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer")
    args = ap.parse_args()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("SKIP: python module `tokenizers` not importable (pip install tokenizers)")
        return SKIP
    tok_path = args.tokenizer or os.path.join(args.data, "deepseek_v3_tokenizer", "tokenizer.json")
    if not os.path.exists(tok_path) or not os.path.isdir(os.path.join(args.data, "gutenberg")):
        print(f"SKIP: shared data not found under {args.data}")
        return SKIP
    texts = corpus_texts(args.data) + random_texts(3000)
    hf = Tokenizer.from_file(tok_path)
    want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    got = run_ours(args.binary, tok_path, texts)
    if len(got) != len(texts):
        print(f"FAIL: {len(got)} output lines for {len(texts)} texts")
        return 1
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    for i in bad[:5]:
        print(f"MISMATCH text {i}: {texts[i][:80]!r}\n  hf:  {want[i][:20]}\n  ours: {got[i][:20]}")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"{len(texts) - len(bad)}/{len(texts)} texts identical ({n_bytes / 1e6:.1f} MB, "
          f"{sum(len(w) for w in want)} tokens)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
