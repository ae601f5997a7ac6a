#!/usr/bin/env python3
# Times ds_bench_train (ours, 1 and 2 threads) against Hugging Face tokenizers' BpeTrainer
# (default threads and RAYON_NUM_THREADS=1) on the same documents, same vocab size, same
# pre-tokenizer (taken from the tokenizer.json ours writes), same special tokens and the
# 256-byte initial alphabet. Both timings cover pre-tokenization, counting and merging of
# in-memory documents (one per file, or per line with --lines); median of --runs.
# Usage: bench_train_vs_hf.py --bench build/bin/ds_bench_train --vocab-size 32000 FILES...
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders
cfg = json.loads(sys.argv[1])
texts = [open(f, encoding="utf-8", newline="").read() for f in cfg["files"]]
docs = [l for t in texts for l in t.splitlines(keepends=True)] if cfg["lines"] else texts
ours = Tokenizer.from_file(cfg["ours"])
specials = [a["content"] for a in json.load(open(cfg["ours"], encoding="utf-8"))["added_tokens"]]
times = []
for _ in range(cfg["runs"]):
    t0 = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = ours.pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=cfg["vocab"], min_frequency=cfg["min_freq"],
                             special_tokens=specials, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=tr, length=len(docs))
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "vocab": tok.get_vocab_size()}))
"""


def run_ours(bench, files, vocab, min_freq, threads, runs, lines, out):
    cmd = [bench, "--vocab-size", str(vocab), "--min-frequency", str(min_freq),
           "--threads", str(threads), "--runs", str(runs), "--out", out] + files
    if lines:
        cmd.append("--lines")
    res = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    times = [float(t) for t in re.findall(r"run \d+: ([0-9.]+) s", res)]
    return times


def run_hf(cfg, rayon_threads):
    env = dict(os.environ)
    if rayon_threads:
        env["RAYON_NUM_THREADS"] = str(rayon_threads)
    res = subprocess.run([sys.executable, "-c", HF_CHILD, json.dumps(cfg)], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(res.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lines", action="store_true", help="one document per line")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    nbytes = sum(os.path.getsize(f) for f in a.files)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tokenizer.json")
        rows = []
        for th in (1, 2):
            t = run_ours(a.bench, a.files, a.vocab_size, a.min_frequency, th, a.runs, a.lines, out)
            rows.append((f"ds BpeTrainer, {th} thread(s)", t))
        cfg = {"files": a.files, "lines": a.lines, "ours": out, "runs": a.runs,
               "vocab": a.vocab_size, "min_freq": a.min_frequency}
        for rt in (0, 1):
            r = run_hf(cfg, rt)
            label = "HF BpeTrainer, " + ("RAYON_NUM_THREADS=1" if rt else "default threads")
            rows.append((label, r["times"]))
            if r["vocab"] != a.vocab_size:
                print(f"note: HF vocab size {r['vocab']} != {a.vocab_size}")
    print(f"input: {len(a.files)} files, {nbytes / 1e6:.2f} MB, "
          f"documents per {'line' if a.lines else 'file'}, vocab {a.vocab_size}, "
          f"min_frequency {a.min_frequency}, cores {os.cpu_count()}, median of {a.runs}")
    print(f"{'trainer':40s} {'median s':>9s} {'min s':>8s}")
    med = {}
    for label, t in rows:
        med[label] = statistics.median(t)
        print(f"{label:40s} {med[label]:9.3f} {min(t):8.3f}")
    ours1 = med["ds BpeTrainer, 1 thread(s)"]
    ours2 = med["ds BpeTrainer, 2 thread(s)"]
    hf = med["HF BpeTrainer, default threads"]
    hf1 = med["HF BpeTrainer, RAYON_NUM_THREADS=1"]
    print(f"speed-up vs HF default threads: {hf / ours2:.2f}x (ours 2 threads), "
          f"{hf / ours1:.2f}x (ours 1 thread); single-thread vs single-thread: {hf1 / ours1:.2f}x")


if __name__ == "__main__":
    main()
