#!/usr/bin/env python3
# Compares encode throughput of ds (bench_encode) with HF `tokenizers` (single thread)
# on the same ~3 MB corpus cut into the same documents (after every "\n\n").
# Usage: bench_encode_vs_hf.py --binary BUILD/bin/ds_bench_encode --data SHARED_DATA
#        [--tokenizer FILE] [--corpus-out PATH] [--runs 5]
# reference: spec §8; HF tokenizers Python API (Tokenizer.encode, no special tokens).
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def build_corpus(data, target_bytes=3_000_000):
    """Gutenberg books + Tiny Shakespeare + GSM8K question/answer pairs, ~target_bytes."""
    parts = []
    gdir = os.path.join(data, "gutenberg")
    for name in sorted(os.listdir(gdir)):
        if name.endswith(".txt") and not name.startswith("LICENSE"):
            with open(os.path.join(gdir, name), encoding="utf-8") as f:
                parts.append(f.read())
    with open(os.path.join(data, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        parts.append(f.read())
    size = sum(len(p.encode("utf-8")) for p in parts)
    with open(os.path.join(data, "gsm8k", "train.jsonl"), encoding="utf-8") as f:
        for line in f:
            if size >= target_bytes:
                break
            rec = json.loads(line)
            doc = rec["question"] + "\n" + rec["answer"]
            parts.append(doc)
            size += len(doc.encode("utf-8")) + 2
    return "\n\n".join(parts)


def split_documents(text):
    docs = text.split("\n\n")
    return [d + "\n\n" for d in docs[:-1]] + ([docs[-1]] if docs[-1] else [])


def bench_hf(tokenizer_path, docs, runs):
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    secs, n_tokens = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n_tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
        secs.append(time.perf_counter() - t0)
    return secs, n_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer")
    ap.add_argument("--corpus-out")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tok_path = args.tokenizer or os.path.join(args.data, "deepseek_v3_tokenizer", "tokenizer.json")
    text = build_corpus(args.data)
    corpus = args.corpus_out or os.path.join(tempfile.mkdtemp(), "bench_corpus.txt")
    with open(corpus, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    mb = len(text.encode("utf-8")) / 1e6
    docs = split_documents(text)

    out = subprocess.run([args.binary, tok_path, corpus, str(args.runs)], check=True,
                         capture_output=True, text=True).stdout
    print(out, end="")
    ds = {int(m.group(1)): (int(m.group(2)), float(m.group(3)))
          for m in re.finditer(r"ds threads=(\d+) tokens=(\d+) first_mbps=\S+ median_mbps=(\S+)", out)}
    secs, hf_tokens = bench_hf(tok_path, docs, args.runs)
    hf_mbps = mb / statistics.median(secs)
    print(f"hf threads=1 tokens={hf_tokens} first_mbps={mb / secs[0]:.2f} median_mbps={hf_mbps:.2f}")
    if 1 in ds:
        print(f"ratio ds/hf (1 thread): {ds[1][1] / hf_mbps:.2f}x")
        if ds[1][0] != hf_tokens:
            print(f"WARNING: token counts differ: ds {ds[1][0]} vs hf {hf_tokens}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
