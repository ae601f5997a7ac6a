#!/usr/bin/env bash
# Arithmetic with checkable answers: a pre-trained tiny DeepSeek-V3 (the quick start's KJV
# checkpoint) -> ds-sft on worked sums -> ds-rl (GRPO, reward: exact match of the number after
# "####") with ds-eval's greedy exact-match accuracy on held-out problems after each stage
# (and, with EVAL_SAMPLES, sampled pass@k and maj@N).
# One seed per invocation; examples/arith/seeds.sh runs several and prints the table.
#
#   base   ds-eval generate --chat on the pre-trained checkpoint       (no training)
#   sft    ds-sft  --init BASE, SFT_STEPS x SFT_BATCH packed rows of SFT_SEQ_LEN tokens
#   grpo   ds-rl   --init SFT,  RL_STEPS x RL_PROMPTS prompts x RL_GROUP samples
#
# Budget (tiny preset, 2 cores): SFT 150 steps x 16 rows x 105 tokens = 252k tokens, ~14 s;
# GRPO 90 steps x 256 completions of ~21 tokens = 484k sampled tokens + 3 passes over them,
# ~70 s; 3 evaluations x 300 greedy completions, ~1 s each: ~1.5 minutes per seed on an idle
# machine (measured; examples/arith/README.md, docs/results.md). Everything lands in
# $OUT/seed-$SEED; finished stages are skipped and an interrupted one resumes, so re-running
# continues where it stopped. The data in $DATA is shared by every seed (made once).
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
SEED=${SEED:-1}                 # seed of the SFT data order and of the GRPO prompts / sampling
DATA_SEED=${DATA_SEED:-0}       # seed of the train / held-out split (the same for every SEED)
TERMS=${TERMS:-3}               # operands per problem
MAX_OPERAND=${MAX_OPERAND:-9}   # operands in [0, MAX_OPERAND]: 1000 distinct problems
HELDOUT=${HELDOUT:-300}         # held-out problems (never in the SFT or RL data)
THREADS=${THREADS:-0}           # CPU threads (0: all cores)

# ---- SFT (ds-sft): see README.md for why the learning rate is 200x the paper's ------------
SFT_STEPS=${SFT_STEPS:-150}
SFT_BATCH=${SFT_BATCH:-16}      # packed rows per step
SFT_SEQ_LEN=${SFT_SEQ_LEN:-104} # a row of 105 tokens holds three 35-token samples
SFT_LR=${SFT_LR:-1e-3}          # cosine from SFT_LR ...
SFT_LR_FINAL=${SFT_LR_FINAL:-1e-4}   # ... to SFT_LR_FINAL
SFT_EXTRA=${SFT_EXTRA:-}        # more ds-sft flags

# ---- GRPO (ds-rl) --------------------------------------------------------------------------
RL_STEPS=${RL_STEPS:-90}
RL_PROMPTS=${RL_PROMPTS:-32}    # prompts per step
RL_GROUP=${RL_GROUP:-8}         # G completions per prompt
RL_TEMPERATURE=${RL_TEMPERATURE:-1.0}
RL_LR=${RL_LR:-3e-5}
RL_BETA=${RL_BETA:-0.04}        # KL weight (spec §5.3, DeepSeekMath's value)
RL_MAX_NEW=${RL_MAX_NEW:-32}    # generated tokens per completion at most (answers need <= 20)
RL_EXTRA=${RL_EXTRA:-}          # more ds-rl flags

# ---- evaluation (ds-eval generate --chat, greedy) ------------------------------------------
EVAL_MAX_NEW=${EVAL_MAX_NEW:-32}
EVAL_BATCH=${EVAL_BATCH:-50}
# Optional sampled evaluation of every stage (EVAL_SAMPLES > 0): EVAL_SAMPLES completions per
# problem at EVAL_TEMPERATURE, pass@k for EVAL_PASS_K (default 1 and EVAL_SAMPLES) and
# maj@EVAL_SAMPLES, into eval-STAGE-sampled.json; `report.py sampled` tabulates them.
EVAL_SAMPLES=${EVAL_SAMPLES:-0}
EVAL_TEMPERATURE=${EVAL_TEMPERATURE:-1.0}
EVAL_PASS_K=${EVAL_PASS_K:-}

RUN=$OUT/seed-$SEED
for t in ds-eval ds-sft ds-rl; do
  [ -x "$BIN/$t" ] || { echo "arith: $BIN/$t not found (build first, or set BIN)" >&2; exit 1; }
done

# ckpt_of DIR: DIR itself when it is a checkpoint, else its newest step-* checkpoint.
ckpt_of() {
  if [ -f "$1/config.json" ]; then echo "$1"; return; fi
  local last
  last=$(ls -d "$1"/step-* 2>/dev/null | sort | tail -n 1)
  [ -n "$last" ] && [ -f "$last/config.json" ] || return 1
  echo "$last"
}
BASE_CKPT=$(ckpt_of "$BASE") || {
  echo "arith: no checkpoint at $BASE: run scripts/quickstart.sh first, or set BASE" >&2
  exit 1
}
mkdir -p "$RUN"

# The problems: one split for every seed (DATA_SEED); regenerated when missing, and an error
# when $DATA was made with other settings (its runs would not be comparable).
GEN_ARGS="--seed $DATA_SEED --terms $TERMS --max-operand $MAX_OPERAND --heldout $HELDOUT"
if [ ! -s "$DATA/rl.jsonl" ]; then
  "$PYTHON" "$HERE/gen.py" --out "$DATA" $GEN_ARGS
  echo "$GEN_ARGS" > "$DATA/gen-args"
elif [ "$(cat "$DATA/gen-args" 2>/dev/null)" != "$GEN_ARGS" ]; then
  echo "arith: $DATA was generated with other settings ($(cat "$DATA/gen-args" 2>/dev/null));" \
    "remove it or set OUT/DATA elsewhere" >&2
  exit 1
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
  if [ "$EVAL_SAMPLES" -gt 0 ] && [ ! -s "$RUN/eval-$stage-sampled.json" ]; then
    "$BIN/ds-eval" generate --model "$model" --task "$DATA/heldout.jsonl" --chat \
      --max-new-tokens "$EVAL_MAX_NEW" --batch-size "$EVAL_BATCH" --threads "$THREADS" \
      --samples "$EVAL_SAMPLES" --temperature "$EVAL_TEMPERATURE" \
      ${EVAL_PASS_K:+--pass-k "$EVAL_PASS_K"} --no-progress --log-level warn \
      --out "$RUN/eval-$stage-sampled.json"
  fi
  "$PYTHON" "$HERE/report.py" stage "$RUN" "$stage" "$train_s" "$(cat "$RUN/eval-$stage.seconds")"
}

# run_stage DIR CMD...: runs CMD (its JSON summary to DIR.json; its log on stderr) unless
# DIR/DONE exists; the wall time goes to DIR.seconds. An interrupted stage resumes from its
# last checkpoint (the tools' --resume auto).
run_stage() {
  local dir=$1 t0
  shift
  if [ ! -f "$dir/DONE" ]; then
    t0=$(now)
    "$@" > "$dir.json"
    echo "$(secs "$t0" "$(now)")" > "$dir.seconds"
    touch "$dir/DONE"
  fi
}

evaluate base "$BASE_CKPT" 0

run_stage "$RUN/sft" \
  "$BIN/ds-sft" --init "$BASE_CKPT" --data "$DATA/sft.jsonl" --out "$RUN/sft" --seed "$SEED" \
    --steps "$SFT_STEPS" --batch-size "$SFT_BATCH" --seq-len "$SFT_SEQ_LEN" --lr "$SFT_LR" \
    --lr-final "$SFT_LR_FINAL" --threads "$THREADS" --metrics "$RUN/sft.metrics.jsonl" \
    --log-every 50 $SFT_EXTRA
SFT_CKPT=$(ckpt_of "$RUN/sft")
evaluate sft "$SFT_CKPT" "$(cat "$RUN/sft.seconds")"

run_stage "$RUN/grpo" \
  "$BIN/ds-rl" --init "$SFT_CKPT" --prompts "$DATA/rl.jsonl" --out "$RUN/grpo" --seed "$SEED" \
    --steps "$RL_STEPS" --prompts-per-step "$RL_PROMPTS" --group-size "$RL_GROUP" \
    --temperature "$RL_TEMPERATURE" --lr "$RL_LR" --beta "$RL_BETA" --chat \
    --max-new-tokens "$RL_MAX_NEW" --threads "$THREADS" --metrics "$RUN/grpo.metrics.jsonl" \
    --log-every 10 $RL_EXTRA
evaluate grpo "$(ckpt_of "$RUN/grpo")" "$(cat "$RUN/grpo.seconds")"
