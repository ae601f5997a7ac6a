#!/usr/bin/env python3
# Trains a small vocabulary with ds_bench_train on ~300 KB of shared text, loads the
# tokenizer.json in Hugging Face `tokenizers`, and checks that HF's encoding of held-out
# text (other sources, plus hand-written edge cases) equals the ids our Tokenizer produced.
# Exit 0 = pass, 1 = mismatch, 77 = skipped (no `tokenizers` module or no shared data).
# Usage: hf_trainer_check.py --bench PATH/ds_bench_train --data SHARED_DATA --workdir DIR
import argparse
import json
import os
import subprocess
import sys

EDGE = ("Hello World! it's 1234567 caf\u00e9 \U0001F30D  \n\n\t\tindented\r\n"
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \uc548\ub155 x+=1; <\uff5cUser\uff5c>hi"
        "<\uff5cAssistant\uff5c>ok<\uff5cend\u2581of\u2581sentence\uff5c>   trailing   ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--vocab-size", type=int, default=2000)
    a = ap.parse_args()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("SKIP: python module `tokenizers` not installed")
        return 77
    train_src = os.path.join(a.data, "gutenberg", "1342-0.txt")
    held_srcs = [os.path.join(a.data, "tinyshakespeare", "input.txt"),
                 os.path.join(a.data, "gsm8k", "train.jsonl")]
    if not all(os.path.isfile(p) for p in [train_src] + held_srcs):
        print(f"SKIP: shared data not found under {a.data}")
        return 77
    os.makedirs(a.workdir, exist_ok=True)
    train_txt = os.path.join(a.workdir, "train.txt")
    held_txt = os.path.join(a.workdir, "heldout.txt")
    with open(train_src, "rb") as f:
        data = f.read(300_000)
    with open(train_txt, "wb") as f:
        f.write(data[: data.rfind(b"\n") + 1])
    held = ""
    for p in held_srcs:
        with open(p, encoding="utf-8", newline="") as f:
            held += f.read(40_000)
    held += EDGE
    with open(held_txt, "w", encoding="utf-8", newline="") as f:
        f.write(held)
    tok_json = os.path.join(a.workdir, "tokenizer.json")
    ids_txt = os.path.join(a.workdir, "heldout.ids")
    subprocess.run([a.bench, "--vocab-size", str(a.vocab_size), "--threads", "2", "--runs", "1",
                    "--out", tok_json, "--encode", held_txt, "--encode-out", ids_txt, train_txt],
                   check=True)
    ours = [int(x) for x in open(ids_txt).read().split()]
    hf_tok = Tokenizer.from_file(tok_json)
    if hf_tok.get_vocab_size(with_added_tokens=True) != a.vocab_size:
        print(f"FAIL: HF vocab size {hf_tok.get_vocab_size(with_added_tokens=True)} "
              f"!= {a.vocab_size}")
        return 1
    hf = hf_tok.encode(held).ids
    if hf != ours:
        i = next((k for k, (x, y) in enumerate(zip(hf, ours)) if x != y), min(len(hf), len(ours)))
        print(f"FAIL: encodings differ at token {i} (HF {len(hf)} ids, ours {len(ours)}): "
              f"HF {hf[max(0, i - 3):i + 5]} ours {ours[max(0, i - 3):i + 5]}")
        print("HF tokens:", hf_tok.encode(held).tokens[max(0, i - 3):i + 5])
        return 1
    if hf_tok.decode(hf, skip_special_tokens=False) != held:
        print("FAIL: HF decode does not round-trip the held-out text")
        return 1
    merges = json.load(open(tok_json, encoding="utf-8"))["model"]["merges"]
    print(f"OK: {len(hf)} ids identical over {len(held)} chars; {len(merges)} merges")
    return 0


if __name__ == "__main__":
    sys.exit(main())
