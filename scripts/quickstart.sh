#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, then runs the pipeline on the
# embedded default corpus (the King James Bible from Debian's bible-kjv package) on a CPU:
#   1. ds-tokenize train   a 4096-token byte-level BPE tokenizer
#   2. ds-tokenize encode  the corpus into checksummed token shards
#   3. ds-pretrain         the tiny DeepSeek-V3 model for a few minutes, loss falling
#   4. gnuplot             the loss curves as a PNG (examples/plot-loss.sh)
#   5. ds-eval             perplexity and bits per byte on held-out text (Revelation 22)
#   6. ds-generate         a greedy continuation of "In the beginning"
#   7. examples/arith      from that checkpoint: ds-sft on worked sums, then ds-rl (GRPO with
#                          an exact-match reward), with ds-eval's held-out accuracy per stage
# Everything lands in runs/quickstart/ (override with QUICKSTART_DIR). Re-running resumes.
# QUICKSTART_ARITH=0 stops after step 6; QUICKSTART_ARITH_SEED picks the example's seed.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${QUICKSTART_DIR:-runs/quickstart}
STEPS=${QUICKSTART_STEPS:-2000}
THREADS=${QUICKSTART_THREADS:-0}
ARITH=${QUICKSTART_ARITH:-1}
ARITH_SEED=${QUICKSTART_ARITH_SEED:-1}

bash scripts/install-deps.sh
bash scripts/build.sh
BIN=build/bin
mkdir -p "$R"

bash scripts/kjv-data.sh "$R" "$BIN" "$THREADS"
"$BIN/ds-tokenize" inspect --data "$R/data" --tokenizer "$R/tokenizer/tokenizer.json"

"$BIN/ds-pretrain" --preset tiny --tokenizer "$R/tokenizer/tokenizer.json" --data "$R/data" \
  --out "$R/pretrain" --steps "$STEPS" --batch-size 16 --seq-len 128 --lr 3e-3 \
  --eval-every 200 --save-every 500 --metrics "$R/pretrain/metrics.jsonl" \
  --threads "$THREADS" --resume

if command -v gnuplot >/dev/null; then
  bash examples/plot-loss.sh "$R/pretrain/metrics.jsonl" "$R/pretrain/loss.png"
  echo "quickstart: loss curves in $R/pretrain/loss.png"
fi
echo "quickstart: held-out perplexity (ds-eval):"
"$BIN/ds-eval" perplexity --model "$R/pretrain" --threads "$THREADS" --no-progress "$R/heldout.txt"
echo "quickstart: a greedy continuation (ds-generate):"
"$BIN/ds-generate" --model "$R/pretrain" --prompt "In the beginning" --max-new-tokens 40 \
  --threads "$THREADS"
echo

if [ "$ARITH" != 0 ]; then
  echo "quickstart: arithmetic, pre-trained -> SFT -> GRPO (examples/arith, seed $ARITH_SEED):"
  BIN=$BIN BASE="$R/pretrain" OUT="$R/arith" SEED=$ARITH_SEED THREADS=$THREADS \
    bash examples/arith/run.sh
  echo "quickstart: done; checkpoints in $R/pretrain/ and $R/arith/seed-$ARITH_SEED/"
else
  echo "quickstart: done; checkpoints in $R/pretrain/"
fi
