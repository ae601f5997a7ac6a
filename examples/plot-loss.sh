#!/usr/bin/env bash
# Turns a ds-pretrain/ds-sft metrics JSONL file into a PNG of the loss curves with gnuplot:
# total, main (next-token), MTP and validation loss against tokens seen.
# usage: examples/plot-loss.sh METRICS.jsonl OUT.png
set -euo pipefail
METRICS=${1:?usage: plot-loss.sh METRICS.jsonl OUT.png}
OUT=${2:?usage: plot-loss.sh METRICS.jsonl OUT.png}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# JSONL -> whitespace columns: tokens loss loss_main loss_mtp [val_loss]
python3 - "$METRICS" "$TMP/train.dat" "$TMP/val.dat" <<'PY'
import json, sys
src, train, val = sys.argv[1:4]
with open(src) as f, open(train, "w") as t, open(val, "w") as v:
    for line in f:
        if not line.strip():
            continue
        m = json.loads(line)
        t.write(f'{m["tokens"]} {m["loss"]} {m["loss_main"]} {m["loss_mtp"]}\n')
        if "val_loss" in m:
            v.write(f'{m["tokens"]} {m["val_loss"]}\n')
PY
VAL_PLOT=""
[ -s "$TMP/val.dat" ] && VAL_PLOT=", \"$TMP/val.dat\" using 1:2 with linespoints title \"validation\""
gnuplot <<GP
set terminal pngcairo size 900,540
set output "$OUT"
set title "ds training loss"
set xlabel "tokens"
set ylabel "loss (nats)"
set grid
set key top right
plot "$TMP/train.dat" using 1:2 with lines title "total", \
     "$TMP/train.dat" using 1:3 with lines title "next-token", \
     "$TMP/train.dat" using 1:4 with lines title "MTP (weighted)"$VAL_PLOT
GP
