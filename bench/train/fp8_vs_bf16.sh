#!/usr/bin/env bash
# FP8 training vs BF16 at our scale (DeepSeek-V3 paper App. B.1: relative loss error < 0.25%):
# the same model, data order, seed and token budget trained with --precision bf16, fp8
# (1x128 / 128x128 / 128x1 tiles) and fp8 with one scale per tensor (what the tiles buy), plus
# fp32 as the reference the others are rounded from. Then fp8_vs_bf16.py prints the table
# (EMA-0.9 smoothed final training loss, final validation loss, relative differences vs bf16,
# tokens/s) and plots the curves with gnuplot.
#
# Budget: the tiny preset (dim 128, 2.1M parameters with MTP) at 16 x 128 = 2048 tokens per
# step after the batch ramp, 1,200 steps (2.37M tokens, ~2.1 epochs of the corpus). One thread
# per run and two runs side by side (JOBS=2; OpenMP barriers waste a loaded machine's cores):
# ~0.3-1 s per step per run on 2 shared cores, fp8 ~10% slower than fp32 (the CPU emulates the
# FP8 GEMMs by fake-quantising the operands): two pairs of 12-17 minutes each at load averages
# of 3-11. The corpus is the King James Bible (Debian's bible-kjv) with a 4096-token BPE
# tokenizer, as scripts/quickstart.sh. Results: docs/results.md "FP8 training vs BF16".
#
# Variables (environment): FP8_BENCH_DIR (runs/fp8_vs_bf16), BIN (build/bin), STEPS (1200),
# THREADS (1), JOBS (2), SEED (1234), RUNS ("fp32 fp8 bf16 fp8-tensor"; fp8-ue8m0 also
# known). Re-running resumes each run from its newest checkpoint and skips finished ones
# (DONE marker).
# usage: bash bench/train/fp8_vs_bf16.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${FP8_BENCH_DIR:-runs/fp8_vs_bf16}
BIN=${BIN:-build/bin}
STEPS=${STEPS:-1200}
THREADS=${THREADS:-1}
SEED=${SEED:-1234}
RUNS=${RUNS:-fp32 fp8 bf16 fp8-tensor}
JOBS=${JOBS:-2}
mkdir -p "$R"

# data: the whole Bible but Revelation 22; tokenizer and shards as the quick start
bash scripts/kjv-data.sh "$R" "$BIN" "$THREADS"

train() {   # train RUN: one ds-pretrain run, its log in RUN/train.log
  local run=$1 out="$R/$1" prec
  [ -f "$out/DONE" ] && return 0
  case "$run" in
    fp32) prec=(--precision fp32) ;;
    bf16) prec=(--precision bf16) ;;
    fp8) prec=(--precision fp8 --fp8-granularity tile) ;;
    fp8-tensor) prec=(--precision fp8 --fp8-granularity tensor) ;;
    fp8-ue8m0) prec=(--precision fp8 --fp8-granularity tile --fp8-scale ue8m0) ;;
    *) echo "fp8_vs_bf16: unknown run '$run'" >&2; return 2 ;;
  esac
  echo "fp8_vs_bf16: training $run (${prec[*]})" >&2
  mkdir -p "$out"
  "$BIN/ds-pretrain" --preset tiny --tokenizer "$R/tokenizer/tokenizer.json" --data "$R/data" \
    --out "$out" --steps "$STEPS" --batch-size 16 --seq-len 128 --lr 3e-3 --seed "$SEED" \
    --eval-every 100 --eval-batches 8 --save-every 500 --metrics "$out/metrics.jsonl" \
    --threads "$THREADS" --log-every 100 "${prec[@]}" --resume \
    > "$out/summary.json" 2> "$out/train.log"
  touch "$out/DONE"
}

# JOBS runs at a time (the pairs run side by side, so their tokens/s are comparable)
set -- $RUNS
while [ $# -gt 0 ]; do
  pids=()
  for _ in $(seq "$JOBS"); do
    [ $# -gt 0 ] || break
    train "$1" & pids+=($!)
    shift
  done
  for p in "${pids[@]}"; do wait "$p"; done
done

python3 bench/train/fp8_vs_bf16.py --png "$R/loss.png" "$R" $RUNS
