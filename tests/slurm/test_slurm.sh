#!/usr/bin/env bash
# End-to-end test of examples/slurm/pretrain.sbatch on a real local Slurm cluster
# (scripts/slurm-local.sh): 2 MPI tasks (srun --mpi=pmix) of ds-pretrain on a tiny corpus.
#   1. sbatch --wait: the job runs to its last step (checkpoint, DONE, sane metrics); then the
#      run continues in new jobs on other layouts (2 tasks as 2 pipeline stages, 1 task);
#   2. SIGTERM mid-run (`scancel --signal=TERM`, the route of --signal=TERM@120) with the
#      script's self-requeue off: the job ends cleanly with a checkpoint at the step it reached;
#      `scontrol requeue` then resumes it from that checkpoint ("resumed from") to the end;
#   3. the time-limit warning (--signal=TERM@S): the tasks save, the script requeues the job
#      itself, and the next run resumes;
#   4. `scontrol requeue` of the running job: the tasks save before Slurm's SIGKILL, and the
#      job resumes from that checkpoint.
# Usage: test_slurm.sh BIN_DIR SOURCE_DIR. Exit 77 (skip) without root, Slurm's daemons or
# its PMIx plugin. KEEP=1 keeps the work directory; DS_SLURM_TEST_NTASKS changes the task count.
set -uo pipefail

BIN=$(realpath "${1:?usage: test_slurm.sh BIN_DIR SOURCE_DIR}")
SRC=$(realpath "${2:?usage: test_slurm.sh BIN_DIR SOURCE_DIR}")
NTASKS=${DS_SLURM_TEST_NTASKS:-2}
SBATCH_SCRIPT=$SRC/examples/slurm/pretrain.sbatch

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (slurmd)"
for c in slurmctld slurmd sbatch srun scontrol scancel squeue; do
  command -v "$c" >/dev/null || skip "$c not installed (apt-get install slurm-wlm)"
done
command -v python3 >/dev/null || skip "python3 not found"
if [ ! -x "$BIN/ds-pretrain" ] || [ ! -x "$BIN/ds-tokenize" ]; then
  echo "FAIL: no ds-pretrain/ds-tokenize in $BIN"; exit 1
fi

T0=$(date +%s)
W=$(mktemp -d /tmp/ds-slurm-test.XXXXXX)
chmod 755 "$W"
C=$W/cluster
cleanup() {
  bash "$SRC/scripts/slurm-local.sh" stop "$C" || true
  if [ "${KEEP:-0}" = 1 ] || [ "$FAILS" -gt 0 ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
FAILS=0
trap cleanup EXIT
trap 'FAILS=$((FAILS + 1)); exit 1' TERM INT   # a timeout still stops the daemons

check() {   # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; FAILS=$((FAILS + 1)); fi
}
fatal() { echo "FAIL $*"; FAILS=$((FAILS + 1)); exit 1; }
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }

# --- the cluster -----------------------------------------------------------------------------
bash "$SRC/scripts/slurm-local.sh" start "$C" || fatal "scripts/slurm-local.sh start"
eval "$(bash "$SRC/scripts/slurm-local.sh" env "$C")"
srun --mpi=list 2>&1 | grep -qw pmix || skip "Slurm has no PMIx plugin (srun --mpi=list)"
echo "cluster up ($(elapsed))"

# --- tiny data: sentences from a small grammar, a 384-token tokenizer, one shard --------------
awk 'BEGIN { srand(11)
  split("the king|a shepherd|the people|my brother|the river|a stranger", S, "|")
  split("went up to|spoke unto|looked upon|rested by|came down from|sang of", V, "|")
  split("the mountain|the city|the temple|the sea|the wilderness|the gate", O, "|")
  for (d = 0; d < 400; d++) {
    n = 3 + int(rand() * 10); line = ""
    for (i = 0; i < n; i++)
      line = line (i ? " " : "") S[1 + int(rand() * 6)] " " V[1 + int(rand() * 6)] " " O[1 + int(rand() * 6)] "."
    print line; print ""
  } }' > "$W/corpus.txt"
"$BIN/ds-tokenize" --log-level warn train --vocab-size 384 --out "$W/tok" "$W/corpus.txt" >/dev/null ||
  fatal "ds-tokenize train"
"$BIN/ds-tokenize" --log-level warn encode --tokenizer "$W/tok/tokenizer.json" --out "$W/data" \
  --doc-split blank-line --force "$W/corpus.txt" >/dev/null || fatal "ds-tokenize encode"

# The job's environment: pretrain.sbatch reads every path and knob from it.
export DS_BIN=$BIN DATA=$W/data TOKENIZER=$W/tok/tokenizer.json PRESET=tiny BATCH=4 SEQ=32 \
  LR=3e-3 THREADS=1 LOG_EVERY=5 MICRO=0
unset EXTRA_ARGS PP EP
cd "$W" || exit 1

job_field() {   # job_field JOBID FIELD -> the value of FIELD= in scontrol show job
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
wait_state() {   # wait_state JOBID STATE RESTARTS TIMEOUT_S: until JobState and Restarts match
  local i st rs
  for ((i = 0; i < $4 * 5; i++)); do
    st=$(job_field "$1" JobState) rs=$(job_field "$1" Restarts)
    [ "$st" = "$2" ] && [ "$rs" = "$3" ] && return 0
    case "$st" in FAILED|CANCELLED|TIMEOUT|NODE_FAIL|BOOT_FAIL|OUT_OF_MEMORY|DEADLINE)
      [ "$rs" = "$3" ] && break ;;   # ended otherwise: no point waiting
    esac
    sleep 0.2
  done
  echo "job $1: JobState=$(job_field "$1" JobState) Restarts=$(job_field "$1" Restarts), expected $2/$3"
  return 1
}
# release JOBID: start a requeued job now instead of in ~2 minutes. Slurm delays requeued
# jobs because a launch credential issued within the second the last run's credentials were
# revoked is refused ("Job credential revoked"): keep 3 s from that end.
release() { scontrol update JobId="$1" StartTime=now+3; }
# (grep -c prints 0 and fails on an empty file: one number either way)
n_metrics() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }
wait_metrics() {   # wait_metrics FILE N TIMEOUT_S: until FILE has N lines
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    [ "$(n_metrics "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# metrics_ok FILE STEPS: one line per step 1..STEPS in order, finite losses, loss falling
metrics_ok() {
  python3 - "$1" "$2" <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
steps = [r["step"] for r in rows]
if steps != list(range(1, n + 1)):
    sys.exit(f"steps {steps[:5]}...{steps[-5:]} (len {len(steps)}), expected 1..{n}")
if not all(math.isfinite(r["loss"]) for r in rows):
    sys.exit("non-finite loss")
first = sum(r["loss"] for r in rows[:3]) / 3
last = sum(r["loss"] for r in rows[-3:]) / 3
if not last < first:
    sys.exit(f"loss did not fall: {first:.3f} -> {last:.3f}")
print(f"  metrics: {n} steps, loss {first:.3f} -> {last:.3f}")
EOF
}
# ckpt_complete DIR: config, weights (one file, or an index and every shard it names), state
ckpt_complete() {
  python3 - "$1" <<'EOF'
import json, os, sys
d = sys.argv[1]
need = ["config.json", "tokenizer.json", "training_state/trainer_state.json"]
idx = os.path.join(d, "model.safetensors.index.json")
if os.path.exists(idx):
    need += sorted(set(json.load(open(idx))["weight_map"].values()))
else:
    need.append("model.safetensors")
missing = [n for n in need if not os.path.isfile(os.path.join(d, n))]
if missing:
    sys.exit(f"{d}: missing {missing}")
EOF
}
# the step a run stopped at: the largest step-XXXXXXXX directory in OUT
last_ckpt_step() {
  find "$1" -maxdepth 1 -name 'step-[0-9]*' -type d | sed 's/.*step-0*//' | sort -n | tail -n 1
}
ckpt() { printf '%s/step-%08d' "$1" "$2"; }

# --- 1. a run to completion ------------------------------------------------------------------
OUT=$W/run1 STEPS=30 SAVE_EVERY=10 EVAL_EVERY=10 \
  sbatch --wait --ntasks="$NTASKS" --output="$W/job1.out" "$SBATCH_SCRIPT" >/dev/null
rc=$?
check "job 1: sbatch --wait exit 0 (got $rc)" test "$rc" -eq 0
check "job 1: final checkpoint step-00000030 with weights and training state" \
  ckpt_complete "$W/run1/step-00000030"
check "job 1: DONE marker" test -e "$W/run1/DONE"
check "job 1: metrics" metrics_ok "$W/run1/metrics.jsonl" 30
check "job 1: a validation loss at step 30" grep -q '"step":30,.*"val_loss"' "$W/run1/metrics.jsonl"
[ "$NTASKS" -gt 1 ] && check "job 1: one run of $NTASKS ranks (one summary, from rank 0)" \
  test "$(grep -c "\"ranks\":$NTASKS," "$W/job1.out")" = 1
echo "job 1 done ($(elapsed))"
[ "$FAILS" -eq 0 ] || { echo "--- job1.out"; tail -n 30 "$W/job1.out"; }

# --- 1b. the same run continued on other layouts: 2 pipeline stages, then 1 task -------------
# (a new submission each: the script resumes the newest checkpoint, whatever layout wrote it)
run_to() {   # run_to NAME TASKS PP STEPS: resubmit run1 with more steps, wait for the end
  rm -f "$W/run1/DONE"
  local j
  j=$(OUT=$W/run1 STEPS=$4 PP=$3 SAVE_EVERY=0 EVAL_EVERY=5 \
    sbatch --parsable --ntasks="$2" --output="$W/$1.out" "$SBATCH_SCRIPT") || fatal "sbatch $1"
  wait_state "$j" COMPLETED 0 60
  check "$1: $2 task(s), pp $3: resumed from step $5" \
    grep -q "resumed from $(ckpt "$W/run1" "$5") at step $5 " "$W/$1.out"
  check "$1: finished at step $4" ckpt_complete "$(ckpt "$W/run1" "$4")"
}
if [ "$NTASKS" -eq 2 ]; then
  run_to job1b 2 2 40 30
  run_to job1c 1 1 50 40
  check "job 1b/1c: metrics of the three layouts continue" metrics_ok "$W/run1/metrics.jsonl" 50
  echo "job 1b/1c done ($(elapsed))"
fi

# --- 2. SIGTERM, clean end, scontrol requeue, resume -----------------------------------------
N=300
j=$(OUT=$W/run2 STEPS=$N SAVE_EVERY=0 EVAL_EVERY=0 REQUEUE=0 \
  sbatch --parsable --ntasks="$NTASKS" --output="$W/job2.out" "$SBATCH_SCRIPT") ||
  fatal "sbatch job 2"
wait_metrics "$W/run2/metrics.jsonl" 10 60 || { tail -n 20 "$W/job2.out"; fatal "job 2: no steps within 60 s"; }
scancel --signal=TERM "$j"
wait_state "$j" COMPLETED 0 60
check "job 2: ended COMPLETED after SIGTERM" test "$(job_field "$j" JobState)" = COMPLETED
k=$(last_ckpt_step "$W/run2")
check "job 2: stopped early with a checkpoint (step ${k:-none} of $N)" test -n "$k" -a "${k:-0}" -lt "$N"
check "job 2: the checkpoint is at the last logged step" test "${k:-x}" = "$(n_metrics "$W/run2/metrics.jsonl")"
check "job 2: checkpoint complete" ckpt_complete "$(ckpt "$W/run2" "${k:-0}")"
check "job 2: the log reports the signal" grep -q "signal 15 received" "$W/job2.out"
check "job 2: the log reports an interrupted run" grep -q '"interrupted":true' "$W/job2.out"
check "job 2: no DONE yet" test ! -e "$W/run2/DONE"
echo "job 2 stopped at step $k ($(elapsed))"

scontrol requeue "$j" || fatal "scontrol requeue $j"
release "$j"    # a requeued job otherwise waits ~2 minutes
wait_state "$j" COMPLETED 1 120
check "job 2: requeued run COMPLETED" test "$(job_field "$j" JobState)" = COMPLETED
check "job 2: resumed from step $k" grep -q "resumed from $(ckpt "$W/run2" "${k:-0}") at step $k " "$W/job2.out"
check "job 2: final checkpoint" ckpt_complete "$(ckpt "$W/run2" "$N")"
check "job 2: DONE marker" test -e "$W/run2/DONE"
check "job 2: metrics continue without gaps or repeats" metrics_ok "$W/run2/metrics.jsonl" "$N"
echo "job 2 done ($(elapsed))"
[ "$FAILS" -eq 0 ] || { echo "--- job2.out"; tail -n 40 "$W/job2.out"; }

# --- 3. the time-limit warning (--signal=TERM@S) and the script's own requeue ----------------
# A 2-minute job warned 60 s before its end (the script asks for 120 s before 30 minutes):
# Slurm sends SIGTERM to the tasks; they save, the script requeues the job, and the next run
# resumes from that checkpoint (then we cancel it: jobs 2 and 4 run to the end).
# slurmctld (22.05) checks time limits every 30 s (PERIODIC_TIMEOUT) and sends the warning,
# once, at the first check with now + warn + 30 >= end: here 30-60 s in. It signals job steps
# only, so a warning due before srun has started ds-pretrain is lost and the job times out
# (CI failed so with --time=1 --signal=TERM@50, due at once): keep end - warn - 30 >= 30 s.
j=$(OUT=$W/run3 STEPS=1000000 SAVE_EVERY=0 EVAL_EVERY=0 \
  sbatch --parsable --ntasks="$NTASKS" --time=2 --signal=TERM@60 --output="$W/job3.out" \
  "$SBATCH_SCRIPT") || fatal "sbatch job 3"
wait_state "$j" PENDING 1 150
check "job 3: requeued itself after the time-limit warning" test "$(job_field "$j" Restarts)" = 1
check "job 3: the script said it requeued" grep -q "requeueing job $j" "$W/job3.out"
check "job 3: the tasks got SIGTERM" grep -q "signal 15 received" "$W/job3.out"
k=$(last_ckpt_step "$W/run3")
check "job 3: checkpoint at the last logged step (${k:-none})" \
  test -n "$k" -a "${k:-x}" = "$(n_metrics "$W/run3/metrics.jsonl")"
# The next run would be warned 30-60 s in again: give it 10 minutes, it is cancelled anyway.
scontrol update JobId="$j" TimeLimit=10
release "$j"
for ((i = 0; i < 300; i++)); do
  grep -q "resumed from" "$W/job3.out" && break
  sleep 0.2
done
check "job 3: resumed from step $k" grep -q "resumed from $(ckpt "$W/run3" "${k:-0}") at step $k " "$W/job3.out"
scancel "$j"
echo "job 3 done ($(elapsed))"
[ "$FAILS" -eq 0 ] || { echo "--- job3.out"; tail -n 40 "$W/job3.out"; }

# --- 4. scontrol requeue of a running job -----------------------------------------------------
# Slurm cancels the running job (SIGTERM to every process, SIGKILL after KillWait): the tasks
# save; the job goes back to the queue and resumes from that checkpoint.
j=$(OUT=$W/run4 STEPS=$N SAVE_EVERY=0 EVAL_EVERY=0 \
  sbatch --parsable --ntasks="$NTASKS" --output="$W/job4.out" "$SBATCH_SCRIPT") ||
  fatal "sbatch job 4"
wait_metrics "$W/run4/metrics.jsonl" 10 60 || { tail -n 20 "$W/job4.out"; fatal "job 4: no steps within 60 s"; }
scontrol requeue "$j" || fatal "scontrol requeue $j (running)"
wait_state "$j" PENDING 1 60
k=$(last_ckpt_step "$W/run4")
check "job 4: the running job saved a checkpoint when requeued (step ${k:-none})" \
  test -n "$k" -a "${k:-0}" -lt "$N"
release "$j"
wait_state "$j" COMPLETED 1 120
check "job 4: resumed from step $k" grep -q "resumed from $(ckpt "$W/run4" "${k:-0}") at step $k " "$W/job4.out"
check "job 4: finished (DONE)" test -e "$W/run4/DONE"
check "job 4: final checkpoint" ckpt_complete "$(ckpt "$W/run4" "$N")"
check "job 4: metrics continue without gaps or repeats" metrics_ok "$W/run4/metrics.jsonl" "$N"
echo "job 4 done ($(elapsed))"
[ "$FAILS" -eq 0 ] || { echo "--- job4.out"; tail -n 40 "$W/job4.out"; }

if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
echo "all checks passed ($(elapsed))"
