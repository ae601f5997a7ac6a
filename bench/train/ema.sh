#!/usr/bin/env bash
# The weight average of ds-pretrain --ema-decay (DeepSeek-V3 §3.3.2: an EMA of the weights kept
# on the CPU "for early estimation of the model performance after learning rate decay").
#
# PART=overhead: what keeping it costs. The same run (KJV data, batch 8 x 128 tokens, no
# evaluation) without and with --ema-decay, alternated REPEATS times per preset (PRESETS, default
# "tiny small"), each run STEPS_OVERHEAD steps on THREADS threads; prints each run's median
# tokens/s (steps 4 onwards) and, per preset, the median with / without ratio and the peak RSS.
#
# PART=quality: what it estimates. Two runs of the tiny model on the KJV data (corpus and
# tokenizer as scripts/quickstart.sh), identical but for the learning rate after warm-up:
# "constant" keeps --lr to the end, "decay" follows the default schedule (constant, then a
# cosine to a tenth from 67.6% of the tokens, then the tails); both keep the average
# (--ema-decay EMA_DECAY) and evaluate every 50 steps on the same held-out windows. Prints
# val_loss and val_loss_ema of both at every evaluation: the average of the constant run
# is the early estimate, the decayed run's weights what it estimates.
#
# Variables (environment): EMA_BENCH_DIR (runs/ema), BIN (build/bin), PART (both), PRESETS,
# REPEATS (3), STEPS_OVERHEAD (20), STEPS (1000), EMA_DECAY (0.99), THREADS (2 for overhead; the
# two quality runs use one thread each, side by side), SEED (1234).
# Results: docs/benchmarks.md "The weight average's cost" and docs/results.md "The weight
# average as an early estimate of a learning-rate decay".
# usage: bash bench/train/ema.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${EMA_BENCH_DIR:-runs/ema}
BIN=${BIN:-build/bin}
PART=${PART:-both}
PRESETS=${PRESETS:-tiny small}
REPEATS=${REPEATS:-3}
STEPS_OVERHEAD=${STEPS_OVERHEAD:-20}
STEPS=${STEPS:-1000}
EMA_DECAY=${EMA_DECAY:-0.99}
THREADS=${THREADS:-2}
SEED=${SEED:-1234}
mkdir -p "$R"
bash scripts/kjv-data.sh "$R" "$BIN" "$THREADS"
TOK="$R/tokenizer/tokenizer.json"

if [ "$PART" = overhead ] || [ "$PART" = both ]; then
  for preset in $PRESETS; do
    for rep in $(seq 1 "$REPEATS"); do
      for mode in off on; do
        out="$R/overhead-$preset-$mode-$rep"
        rm -rf "$out"
        extra=()
        [ "$mode" = on ] && extra=(--ema-decay "$EMA_DECAY")
        /usr/bin/time -f "%M" -o "$out.rss" "$BIN/ds-pretrain" --preset "$preset" \
          --tokenizer "$TOK" --data "$R/data" --out "$out" --steps "$STEPS_OVERHEAD" \
          --batch-size 8 --seq-len 128 --seed "$SEED" --threads "$THREADS" \
          --metrics "$out.jsonl" --resume never "${extra[@]}" > /dev/null 2> "$out.log"
        rm -rf "$out"   # the checkpoint is not what is measured
      done
    done
  done
  python3 - "$R" "$PRESETS" "$REPEATS" <<'PY'
import json, statistics, sys
r, presets, reps = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def tps(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return statistics.median(m["tokens_per_s"] for m in rows if m["step"] >= 4)
print("preset  run  tokens/s off  tokens/s on  on/off")
for p in presets:
    ratios = []
    for i in range(1, reps + 1):
        off = tps(f"{r}/overhead-{p}-off-{i}.jsonl")
        on = tps(f"{r}/overhead-{p}-on-{i}.jsonl")
        ratios.append(on / off)
        print(f"{p:6}  {i:3}  {off:12.0f}  {on:11.0f}  {on / off:6.3f}")
    rss = {m: max(int(open(f"{r}/overhead-{p}-{m}-{i}.rss").read().split()[-1])
                  for i in range(1, reps + 1)) / 1024 for m in ("off", "on")}
    print(f"{p:6}  median on/off {statistics.median(ratios):.3f}; peak RSS off {rss['off']:.0f} "
          f"MiB, on {rss['on']:.0f} MiB")
PY
fi

if [ "$PART" = quality ] || [ "$PART" = both ]; then
  one_run() {   # name, extra flags...
    local name=$1 out="$R/quality-$1"
    shift
    [ -f "$out/DONE" ] && return 0
    mkdir -p "$out"
    "$BIN/ds-pretrain" --preset tiny --tokenizer "$TOK" --data "$R/data" --out "$out" \
      --steps "$STEPS" --batch-size 16 --seq-len 128 --lr 3e-3 --seed "$SEED" \
      --ema-decay "$EMA_DECAY" --eval-every 50 --val-sequences 256 --eval-batches 16 \
      --save-every 250 --metrics "$out/metrics.jsonl" --threads 1 --resume "$@" \
      2>> "$out/log.txt" > "$out/summary.json"
    touch "$out/DONE"
  }
  one_run constant --lr-constant-end 1 &
  a=$!
  one_run decay &
  b=$!
  wait "$a" && wait "$b"
  python3 - "$R" <<'PY'
import json, sys
r = sys.argv[1]
runs = {n: {m["step"]: m for m in map(json.loads, open(f"{r}/quality-{n}/metrics.jsonl"))
            if "val_loss" in m} for n in ("constant", "decay")}
print("step   lr const  val const  ema const    lr decay  val decay  ema decay")
for s in sorted(runs["constant"]):
    c, d = runs["constant"][s], runs["decay"].get(s)
    if d is None:
        continue
    print(f"{s:5}  {c['lr']:.2e}  {c['val_loss']:9.4f}  {c['val_loss_ema']:9.4f}    "
          f"{d['lr']:.2e}  {d['val_loss']:9.4f}  {d['val_loss_ema']:9.4f}")
PY
fi
