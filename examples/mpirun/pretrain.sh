#!/usr/bin/env bash
# ds-pretrain on CPU ranks with Open MPI's mpirun, no scheduler: by default 4 ranks on this
# machine in the layout --pp 2 --ep 2 (2 pipeline stages x 2 data-parallel ranks, the 2 ranks
# of a stage splitting the routed experts), the tiny preset on the quick start's data.
# Run from the repository root; re-running resumes the latest checkpoint in $OUT.
#
#   bash examples/mpirun/pretrain.sh
#   NP=2 PP=1 EP=2 STEPS=500 bash examples/mpirun/pretrain.sh
#   HOSTS=node1:4,node2:4 NP=8 PP=2 EP=4 bash examples/mpirun/pretrain.sh   # several hosts
#
# Layout: world = NP = PP x dp; EP divides dp; rank = pp_rank x dp + dp_rank (stage-major).
# BATCH is the global batch: each step is BATCH x SEQ tokens whatever NP is, and each of the
# dp ranks of a stage computes BATCH / dp sequences (in micro-batches of MICRO, which also
# feed the pipeline: 1F1B wants at least PP micro-batches per rank).
#
# Budget (defaults): 16 x 128 = 2,048 tokens per step, 1,000 steps = 2.0M tokens; the tiny
# preset does ~19k tokens/s on 2 cores in one process (docs/benchmarks.md), so count
# 2-4 minutes for 4 ranks sharing 2 cores (pipeline bubbles and messages cost more than they
# save at this size; the point here is the layout, not the speed).
#
# Stopping: Ctrl-C or SIGTERM to this script forwards SIGTERM to the local ranks; they agree on
# the step to stop at, save one checkpoint and exit 0. (mpirun runs in a session of its own:
# mpirun itself answers SIGINT/SIGTERM by killing the ranks 1 s later, before they can save.
# If you must signal mpirun, give it --mca odls_base_sigkill_timeout 60: the ranks then get
# SIGTERM after 60 s and 60 s more to save.)
set -euo pipefail

DS_BIN=${DS_BIN:-build/bin}
WORK=${WORK:-runs/quickstart}                          # the quick start's data (made if missing)
DATA=${DATA:-$WORK/data}
TOKENIZER=${TOKENIZER:-$WORK/tokenizer/tokenizer.json}
OUT=${OUT:-runs/mpirun-pretrain}
NP=${NP:-4}
PP=${PP:-2}
EP=${EP:-2}
PP_SCHEDULE=${PP_SCHEDULE:-1f1b}  # 1f1b, gpipe or dualpipe (even PP, >= 2 PP micro-batches)
HOSTS=${HOSTS:-}                  # mpirun --host list (empty: this machine)
PRESET=${PRESET:-tiny}
STEPS=${STEPS:-1000}
BATCH=${BATCH:-16}                # global sequences per step
MICRO=${MICRO:-4}                 # sequences per micro-batch on one rank
SEQ=${SEQ:-128}
LR=${LR:-3e-3}
THREADS=${THREADS:-$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))}   # CPU threads per rank
SAVE_EVERY=${SAVE_EVERY:-200}
EVAL_EVERY=${EVAL_EVERY:-200}
EXTRA_ARGS=${EXTRA_ARGS:-}

mkdir -p "$OUT"
if [ ! -f "$DATA/manifest.json" ] || [ ! -f "$TOKENIZER" ]; then
  if ! command -v bible >/dev/null; then
    echo "pretrain.sh: no $DATA, and no 'bible' to make it (apt-get install bible-kjv)" >&2
    exit 1
  fi
  mkdir -p "$WORK"
  if [ ! -s "$WORK/kjv.txt" ]; then
    bible "Gen1:1-Rev21:27" > "$WORK/kjv.txt.tmp" && mv "$WORK/kjv.txt.tmp" "$WORK/kjv.txt"
  fi
  if [ ! -f "$TOKENIZER" ]; then
    "$DS_BIN/ds-tokenize" train --vocab-size 4096 --out "$(dirname "$TOKENIZER")" --force \
      "$WORK/kjv.txt"
  fi
  "$DS_BIN/ds-tokenize" encode --tokenizer "$TOKENIZER" --out "$DATA" --doc-split blank-line \
    --force "$WORK/kjv.txt"
fi

MPIRUN=(mpirun -n "$NP" --bind-to none)            # ranks use THREADS cores each: no pinning
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
[ "$NP" -gt "$(nproc)" ] && [ -z "$HOSTS" ] && MPIRUN+=(--oversubscribe)
[ -n "$HOSTS" ] && MPIRUN+=(--host "$HOSTS")

# shellcheck disable=SC2317  # called by the trap
forward() { if [ -n "${pid:-}" ]; then pkill -TERM -P "$pid" 2>/dev/null || true; fi; }
trap forward TERM INT
# shellcheck disable=SC2086
setsid "${MPIRUN[@]}" "$DS_BIN/ds-pretrain" --pp "$PP" --ep "$EP" --pp-schedule "$PP_SCHEDULE" \
  --preset "$PRESET" --tokenizer "$TOKENIZER" --data "$DATA" --out "$OUT" --steps "$STEPS" \
  --batch-size "$BATCH" --micro-batch-size "$MICRO" --seq-len "$SEQ" --lr "$LR" \
  --threads "$THREADS" --save-every "$SAVE_EVERY" --eval-every "$EVAL_EVERY" \
  --metrics "$OUT/metrics.jsonl" --resume auto $EXTRA_ARGS &
pid=$!
rc=0
while :; do
  wait "$pid" && rc=0 || rc=$?
  kill -0 "$pid" 2>/dev/null || break                # a trapped signal ended the wait early
done
if [ "$rc" -eq 0 ] && [ -d "$OUT/step-$(printf %08d "$STEPS")" ]; then
  echo "pretrain.sh: finished; checkpoints in $OUT"
elif [ "$rc" -eq 0 ]; then
  echo "pretrain.sh: stopped with a checkpoint saved; run again to resume"
fi
exit "$rc"
