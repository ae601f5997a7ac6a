#!/usr/bin/env bash
# The arithmetic example over several seeds: examples/arith/run.sh once per seed (each resumes
# after its last finished stage), then one Markdown table of held-out exact match per stage
# (base / after SFT / after GRPO), also written to $OUT/results.md. Every run.sh variable
# (BIN, BASE, OUT, SFT_*, RL_*, ...) passes through the environment.
#   SEEDS="1 2 3" bash examples/arith/seeds.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SEEDS=${SEEDS:-1 2 3}
OUT=${OUT:-$ROOT/runs/arith}
PYTHON=${PYTHON:-python3}
export OUT

dirs=()
for s in $SEEDS; do
  SEED=$s bash "$HERE/run.sh"
  dirs+=("$OUT/seed-$s")
done
"$PYTHON" "$HERE/report.py" table "${dirs[@]}" | tee "$OUT/results.md"
if [ "${EVAL_SAMPLES:-0}" -gt 0 ]; then
  echo | tee -a "$OUT/results.md"
  "$PYTHON" "$HERE/report.py" sampled "${dirs[@]}" | tee -a "$OUT/results.md"
fi
