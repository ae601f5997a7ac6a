#!/usr/bin/env python3
# Writes the corpora of the Unicode-widening cost figures (docs/benchmarks.md): OUT/en.txt
# (the first 1.3 MB of the shared Gutenberg books), OUT/mix.txt (1 MB of random words from
# eleven scripts and symbol blocks, none recategorised since Unicode 14) and OUT/mixnew.txt
# (mix.txt with U+1FAE8, assigned in Unicode 15, after the first 50,000 spaces).
# Usage: make_unicode_corpus.py SHARED_DATA OUT
import os
import random
import sys

data, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
gdir = os.path.join(data, "gutenberg")
books = "".join(open(os.path.join(gdir, f), encoding="utf-8").read()
                for f in sorted(os.listdir(gdir))
                if f.endswith(".txt") and not f.startswith("LICENSE"))
with open(os.path.join(out, "en.txt"), "w", encoding="utf-8") as f:
    f.write(books[:1_300_000])
rng = random.Random(1)
blocks = [(0x4E00, 0x9FA5), (0x0400, 0x044F), (0x0600, 0x064A), (0x3040, 0x309F),
          (0xAC00, 0xD7A3), (0x0E01, 0x0E30), (0x0905, 0x0939), (0x1F600, 0x1F64F),
          (0x0030, 0x0039), (0x0021, 0x002F), (0x03B1, 0x03C9)]
words, size = [], 0
while size < 1_000_000:
    lo, hi = rng.choice(blocks)
    w = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8)))
    w += rng.choice([" ", " ", " ", "\n", ", ", "\u3002"])
    words.append(w)
    size += len(w.encode("utf-8"))
mix = "".join(words)
with open(os.path.join(out, "mix.txt"), "w", encoding="utf-8") as f:
    f.write(mix)
with open(os.path.join(out, "mixnew.txt"), "w", encoding="utf-8") as f:
    f.write(mix.replace(" ", " \U0001FAE8 ", 50000))
