#!/usr/bin/env bash
# Arithmetic with checkable answers: a pre-trained tiny DeepSeek-V3 (the quick start's KJV
# checkpoint) -> ds-sft on worked sums -> ds-rl (GRPO, reward: exact match of the number after
# "####") with ds-eval's greedy exact-match accuracy on held-out problems after each stage.
# One seed per invocation; examples/arith/seeds.sh runs several and prints the table.
#
#   base   ds-eval generate --chat on the pre-trained checkpoint       (no training)
#   sft    ds-sft  --init BASE, SFT_STEPS x SFT_BATCH packed rows of SFT_SEQ_LEN tokens
#   grpo   ds-rl   --init SFT,  RL_STEPS x RL_PROMPTS prompts x RL_GROUP samples
#
# Budget (2 shared cores, tiny preset, 1.8M parameters): see examples/arith/README.md for the
# measured per-stage times. Everything lands in $OUT/seed-$SEED; a stage whose output exists
# is skipped, so re-running resumes after the last finished stage.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---- paths -------------------------------------------------------------------------------
BIN=${BIN:-$ROOT/build/bin}                        # ds-sft, ds-rl, ds-eval
BASE=${BASE:-$ROOT/runs/quickstart/pretrain}       # pre-trained checkpoint or run directory
OUT=${OUT:-$ROOT/runs/arith}                       # run directories seed-$SEED inside
DATA=${DATA:-$OUT/data}                            # generated problems (shared by all seeds)
PYTHON=${PYTHON:-python3}

# ---- task (examples/arith/gen.py) ----------------------------------------------------------
SEED=${SEED:-1}                 # seed of SFT data order / initial sampling / GRPO sampling
DATA_SEED=${DATA_SEED:-0}       # seed of the train / held-out split (fixed across seeds)
TERMS=${TERMS:-3}               # operands per problem
MAX_OPERAND=${MAX_OPERAND:-9}   # operands in [0, MAX_OPERAND]
HELDOUT=${HELDOUT:-200}         # held-out problems (never trained on)
THREADS=${THREADS:-0}           # CPU threads (0: all cores)

# ---- SFT (ds-sft) --------------------------------------------------------------------------
SFT_STEPS=${SFT_STEPS:-150}
SFT_BATCH=${SFT_BATCH:-16}
SFT_SEQ_LEN=${SFT_SEQ_LEN:-128}
SFT_LR=${SFT_LR:-1e-3}          # far above the paper's 5e-6: see README.md
SFT_EXTRA=${SFT_EXTRA:-}        # more ds-sft flags

# ---- GRPO (ds-rl) --------------------------------------------------------------------------
RL_STEPS=${RL_STEPS:-60}
RL_PROMPTS=${RL_PROMPTS:-16}    # prompts per step
RL_GROUP=${RL_GROUP:-8}         # G samples per prompt
RL_TEMPERATURE=${RL_TEMPERATURE:-1.0}
RL_LR=${RL_LR:-1e-4}
RL_BETA=${RL_BETA:-0.04}        # KL weight (spec §5.3, DeepSeekMath)
RL_MAX_NEW=${RL_MAX_NEW:-32}    # generated tokens per sample at most
RL_EXTRA=${RL_EXTRA:-}          # more ds-rl flags

# ---- evaluation (ds-eval generate --chat) --------------------------------------------------
EVAL_MAX_NEW=${EVAL_MAX_NEW:-32}
EVAL_BATCH=${EVAL_BATCH:-50}

RUN=$OUT/seed-$SEED
for t in ds-eval ds-sft ds-rl; do
  [ -x "$BIN/$t" ] || { echo "arith: $BIN/$t not found (build first, or set BIN)" >&2; exit 1; }
done
if [ ! -f "$BASE/config.json" ] && ! ls -d "$BASE"/step-* >/dev/null 2>&1; then
  echo "arith: no checkpoint at $BASE: run scripts/quickstart.sh first, or set BASE" >&2
  exit 1
fi
mkdir -p "$RUN"

# The problems: one split for every seed (DATA_SEED), regenerated only when missing.
if [ ! -s "$DATA/rl.jsonl" ]; then
  "$PYTHON" "$HERE/gen.py" --out "$DATA" --seed "$DATA_SEED" --terms "$TERMS" \
    --max-operand "$MAX_OPERAND" --heldout "$HELDOUT"
fi

now() { date +%s.%N; }
secs() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

# evaluate STAGE MODEL TRAIN_SECONDS: held-out exact match, one summary line.
evaluate() {
  local stage=$1 model=$2 train_s=$3 t0
  if [ ! -s "$RUN/eval-$stage.json" ]; then
    t0=$(now)
    "$BIN/ds-eval" generate --model "$model" --task "$DATA/heldout.jsonl" --chat \
      --max-new-tokens "$EVAL_MAX_NEW" --batch-size "$EVAL_BATCH" --threads "$THREADS" \
      --no-progress --log-level warn --log-samples "$RUN/samples-$stage.jsonl" \
      --out "$RUN/eval-$stage.json"
    echo "$(secs "$t0" "$(now)")" > "$RUN/eval-$stage.seconds"
  fi
  "$PYTHON" "$HERE/report.py" stage "$RUN" "$stage" "$train_s" "$(cat "$RUN/eval-$stage.seconds")"
}

# run_stage NAME DIR CMD...: runs CMD unless DIR/DONE exists; its wall time in DIR.seconds.
run_stage() {
  local name=$1 dir=$2 t0
  shift 2
  if [ ! -f "$dir/DONE" ]; then
    t0=$(now)
    "$@"
    echo "$(secs "$t0" "$(now)")" > "$dir.seconds"
    touch "$dir/DONE"
  fi
}

evaluate base "$BASE" 0

run_stage sft "$RUN/sft" \
  "$BIN/ds-sft" --init "$BASE" --data "$DATA/sft.jsonl" --out "$RUN/sft" --seed "$SEED" \
    --steps "$SFT_STEPS" --batch-size "$SFT_BATCH" --seq-len "$SFT_SEQ_LEN" --lr "$SFT_LR" \
    --threads "$THREADS" --metrics "$RUN/sft/metrics.jsonl" $SFT_EXTRA
evaluate sft "$RUN/sft" "$(cat "$RUN/sft.seconds")"

run_stage grpo "$RUN/grpo" \
  "$BIN/ds-rl" --init "$RUN/sft" --prompts "$DATA/rl.jsonl" --out "$RUN/grpo" --seed "$SEED" \
    --steps "$RL_STEPS" --prompts-per-step "$RL_PROMPTS" --group-size "$RL_GROUP" \
    --temperature "$RL_TEMPERATURE" --lr "$RL_LR" --beta "$RL_BETA" --chat \
    --max-new-tokens "$RL_MAX_NEW" --threads "$THREADS" --metrics "$RUN/grpo/metrics.jsonl" \
    $RL_EXTRA
evaluate grpo "$RUN/grpo" "$(cat "$RUN/grpo.seconds")"
