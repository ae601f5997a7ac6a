#!/usr/bin/env bash
# Distributed training on CPU ranks (issue 8): ds-pretrain under mpirun on one machine.
#   1. tokens/s of the small preset for a fixed global batch: 1 rank x 1 thread, 1 rank x 2
#      threads, 2 ranks data-parallel (dp 2), 2 ranks expert-parallel (--ep 2), 2 ranks
#      pipeline-parallel (--pp 2: 1F1B, GPipe and, when ds-pretrain offers it, DualPipe), 1
#      thread per rank; the layouts run interleaved (A B C ... A B C ...), REPS rounds;
#   2. the all-to-all bytes per step of --ep 2 (small) and of the tiny preset at --ep 2
#      (2 ranks) and --ep 4 (4 oversubscribed ranks) against the uniform-routing formula;
#   3. rank 0's pipeline bubble for --pp 2 at M = 8 / micro-batch-size micro-batches per step
#      against (pp-1)/(M+pp-1) and against a simulation with the stages' FLOP imbalance.
# Then bench/dist/dist_report.py prints the tables (docs/benchmarks.md "Distributed (CPU ranks)").
#
# Data: a generated corpus (4.4 MB, seeded word grammar) with a 2048-id BPE tokenizer, as
# bench/train/bench_train.py. The model is the preset at the tokenizer's vocabulary
# (VOCAB=tokenizer, what ds-pretrain --preset does) or at the preset's own (VOCAB=preset: the
# preset's config.json with vocab_size 32000 for small, 4096 for tiny; slower, and the head
# then makes the last pipeline stage much heavier).
#
# Variables (environment): BIN (build/bin), DIST_BENCH_DIR (runs/bench_dist; wiped of earlier
# results), REPS (2 rounds of the main table), STEPS (5 per run), WARMUP (2 skipped),
# BATCH (8 sequences, global), SEQ (256), MS ("2 4": extra micro-batch counts of the bubble
# sweep; 8 is in the main table), VOCAB (tokenizer), MPIRUN (mpirun).
# 21 runs with REPS=2, about 20 s each: about 7 minutes (REPS=3, 28 runs: 9.4 minutes at load
# average 3-5 on 2 cores).
# usage: bash bench/dist/bench_dist.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin}
R=${DIST_BENCH_DIR:-runs/bench_dist}
REPS=${REPS:-2}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
BATCH=${BATCH:-8}
SEQ=${SEQ:-256}
MS=${MS:-2 4}
VOCAB=${VOCAB:-tokenizer}
MPIRUN=${MPIRUN:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
HELPER=bench/dist/dist_report.py

mkdir -p "$R"
rm -rf "$R/results" "$R/work"
mkdir -p "$R/results" "$R/work"

# data: generated corpus, 2048-id tokenizer, shards
if [ ! -f "$R/data/manifest.json" ]; then
  python3 "$HELPER" corpus "$R/corpus.txt"
  "$BIN/ds-tokenize" --log-level warn train --vocab-size 2048 --out "$R/tok" --force \
    --doc-split blank-line "$R/corpus.txt" >/dev/null
  "$BIN/ds-tokenize" --log-level warn encode --tokenizer "$R/tok/tokenizer.json" --out "$R/data" \
    --doc-split blank-line --force "$R/corpus.txt" >/dev/null
fi
TOK=$R/tok/tokenizer.json

# model flags per preset: --preset P, or its config.json at the preset's own vocabulary
model_flags() {   # model_flags PRESET
  if [ "$VOCAB" = preset ]; then
    local cfg="$R/config-$1.json"
    if [ ! -f "$cfg" ]; then
      "$BIN/ds-pretrain" --log-level warn --preset "$1" --tokenizer "$TOK" --data "$R/data" \
        --out "$R/work/cfg-$1" --steps 1 --batch-size 1 --seq-len 16 --val-sequences 0 >/dev/null
      python3 "$HELPER" preset-config "$R/work/cfg-$1" "$1" "$cfg"
      rm -rf "$R/work/cfg-$1"
    fi
    echo "--model-config $cfg"
  else
    echo "--preset $1"
  fi
}

HAS_DUALPIPE=0
"$BIN/ds-pretrain" --help 2>&1 | grep -q dualpipe && HAS_DUALPIPE=1

# run NAME LAYOUT RANKS THREADS PRESET BATCH SEQ [ds-pretrain flags...]: one measured run; its
# metrics, summary and config.json go to results/, a line describing it to runs.jsonl.
run() {
  local name=$1 layout=$2 n=$3 th=$4 preset=$5 b=$6 t=$7
  shift 7
  local out="$R/work/$name" res="$R/results/$name" load t0 t1 rc=0
  rm -rf "$out"
  mkdir -p "$out" "$res"
  load=$(cut -d' ' -f1 /proc/loadavg)
  local cmd=("$BIN/ds-pretrain" --log-level warn $(model_flags "$preset") --tokenizer "$TOK"
             --data "$R/data" --out "$out" --steps "$STEPS" --batch-size "$b" --seq-len "$t"
             --threads "$th" --lr 3e-4 --warmup-steps 1 --batch-ramp-end 0 --val-sequences 0
             --keep-last 1 --metrics "$res/metrics.jsonl" "$@")
  [ "$n" -gt 1 ] && cmd=("$MPIRUN" -n "$n" "${cmd[@]}")
  echo "bench_dist: $name: ${cmd[*]}" >&2
  t0=$(date +%s.%N)
  "${cmd[@]}" > "$res/summary.json" 2> "$res/stderr.log" || rc=$?
  t1=$(date +%s.%N)
  if [ "$rc" != 0 ]; then
    echo "bench_dist: $name failed (exit $rc):" >&2
    tail -5 "$res/stderr.log" >&2
  fi
  cp "$out"/step-*/config.json "$res/config.json" 2>/dev/null || true
  rm -rf "$out"
  python3 - "$R/runs.jsonl" <<EOF
import json, sys
flags = "$*".split()
def flag(f, d):
    return flags[flags.index(f) + 1] if f in flags else d
rec = {"name": "$name", "layout": "$layout", "ranks": $n, "threads": $th, "preset": "$preset",
       "batch": $b, "seq_len": $t, "pp": int(flag("--pp", 1)), "ep": int(flag("--ep", 1)),
       "schedule": flag("--pp-schedule", "1f1b"), "micro_batch": int(flag("--micro-batch-size", 0)),
       "load1_before": float("$load"), "wall_s": $t1 - $t0, "rc": $rc, "warmup": $WARMUP,
       "vocab": "$VOCAB", "results": "$res"}
open(sys.argv[1], "a").write(json.dumps(rec) + "\n")
EOF
}
rm -f "$R/runs.jsonl"

# 1. the main table, interleaved rounds (ranks x threads = 2 cores, except the 1 x 1 baseline)
B=$BATCH T=$SEQ
for rep in $(seq "$REPS"); do
  run "r$rep-1x1" "1 rank" 1 1 small $B $T
  run "r$rep-1x2" "1 rank" 1 2 small $B $T
  run "r$rep-dp2" "dp 2" 2 1 small $B $T
  run "r$rep-ep2" "dp 2, ep 2" 2 1 small $B $T --ep 2
  run "r$rep-pp2-1f1b" "pp 2, 1F1B" 2 1 small $B $T --pp 2 --pp-schedule 1f1b --micro-batch-size $((B / 8))
  run "r$rep-pp2-gpipe" "pp 2, GPipe" 2 1 small $B $T --pp 2 --pp-schedule gpipe --micro-batch-size $((B / 8))
  if [ "$HAS_DUALPIPE" = 1 ]; then
    run "r$rep-pp2-dualpipe" "pp 2, DualPipe" 2 1 small $B $T --pp 2 --pp-schedule dualpipe --micro-batch-size $((B / 8))
  fi
done

# 3. bubble sweep: fewer micro-batches per step (DualPipe needs an even M >= 2 pp = 4)
for M in $MS; do
  for s in 1f1b gpipe dualpipe; do
    [ "$s" = dualpipe ] && { [ "$HAS_DUALPIPE" = 1 ] && [ "$M" -ge 4 ] || continue; }
    run "m$M-pp2-$s" "pp 2, $s, M=$M" 2 1 small $B $T --pp 2 --pp-schedule $s --micro-batch-size $((B / M))
  done
done

# 2. all-to-all bytes of the tiny preset (the small --ep 2 runs are above)
run "tiny-ep2" "tiny, dp 2, ep 2" 2 1 tiny 8 128 --ep 2
run "tiny-ep4" "tiny, dp 4, ep 4" 4 1 tiny 8 128 --ep 4

python3 "$HELPER" report "$R/runs.jsonl" | tee "$R/report.md"
