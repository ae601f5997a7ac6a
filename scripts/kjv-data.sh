#!/usr/bin/env bash
# The embedded default corpus, tokenizer and token shards that the quick start and the
# training experiments share, made once in DIR (each step is skipped when its output exists):
#   DIR/kjv.txt        the King James Bible from Debian's bible-kjv package, Genesis 1:1 to
#                      Revelation 21:27
#   DIR/heldout.txt    Revelation 22, never trained on
#   DIR/tokenizer/     a 4096-token byte-level BPE tokenizer trained on kjv.txt
#   DIR/data/          kjv.txt encoded, one document per blank-line-separated block
# usage: bash scripts/kjv-data.sh DIR BIN THREADS
set -euo pipefail
R=$1 BIN=$2 THREADS=$3
mkdir -p "$R"
if [ ! -s "$R/kjv.txt" ]; then
  bible "Gen1:1-Rev21:27" > "$R/kjv.txt.tmp" && mv "$R/kjv.txt.tmp" "$R/kjv.txt"
fi
[ -s "$R/heldout.txt" ] || bible "Rev22:1-Rev22:21" > "$R/heldout.txt"
if [ ! -f "$R/tokenizer/tokenizer.json" ]; then
  "$BIN/ds-tokenize" train --vocab-size 4096 --out "$R/tokenizer" --threads "$THREADS" --force \
    "$R/kjv.txt"
fi
if [ ! -f "$R/data/manifest.json" ]; then
  "$BIN/ds-tokenize" encode --tokenizer "$R/tokenizer/tokenizer.json" --out "$R/data" \
    --doc-split blank-line --threads "$THREADS" --force "$R/kjv.txt"
fi
