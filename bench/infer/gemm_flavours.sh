#!/usr/bin/env bash
# Decode speed of the engine with each CPU GEMM flavour, side by side: ds_bench_infer runs
# alternating DS_GEMM=portable (the portable small-M kernels: what a CPU without AVX2 runs)
# and DS_GEMM=native (the widest flavour this CPU runs: AVX2 or AVX-512), for F32 and
# BF16-exact weights at batch 1 and 4 (small preset). Prints every run, then the median decode
# tokens/s per case and the native/portable ratio. The alternation spreads the load of a
# shared machine over both sides.
# Usage: bench/infer/gemm_flavours.sh [BUILD_DIR (build)]; env ROUNDS (5), THREADS (2),
# PRESET (small), PROMPT (128), NEW (48), BATCHES ("1 4").
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build}/bin
ROUNDS=${ROUNDS:-5}; THREADS=${THREADS:-2}; PRESET=${PRESET:-small}
PROMPT=${PROMPT:-128}; NEW=${NEW:-48}; BATCHES=${BATCHES:-"1 4"}
OUT=$(mktemp -t ds_gemm_flavours.XXXXXX)
trap 'rm -f "$OUT"' EXIT

for round in $(seq "$ROUNDS"); do
  for batch in $BATCHES; do
    for weights in f32 bf16; do
      flag=(); [ "$weights" = bf16 ] && flag=(--bf16-weights)
      for mode in portable native; do
        tps=$(DS_GEMM=$mode "$BIN/ds_bench_infer" --preset "$PRESET" --threads "$THREADS" \
                --reps 3 --prompt-len "$PROMPT" --new-tokens "$NEW" --batch "$batch" \
                "${flag[@]}" 2>/dev/null | tail -1 |
              python3 -c 'import json, sys; print(json.load(sys.stdin)["decode_tokens_per_s"])')
        echo "round $round batch $batch $weights $mode $tps" | tee -a "$OUT"
      done
    done
  done
done

python3 - "$OUT" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, _, batch, weights, mode, tps = line.split()
    runs[(int(batch), weights, mode)].append(float(tps))
print("| batch | weights | portable tok/s | native tok/s | native / portable |")
print("|---:|---|---:|---:|---:|")
for batch, weights in sorted({(b, w) for b, w, _ in runs}):
    p = statistics.median(runs[(batch, weights, "portable")])
    n = statistics.median(runs[(batch, weights, "native")])
    print(f"| {batch} | {weights} | {p:.1f} | {n:.1f} | {n / p:.2f}x |")
EOF
