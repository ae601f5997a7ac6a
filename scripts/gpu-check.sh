#!/usr/bin/env bash
# One run on a GPU machine (the lent H200; ../shared/device/README.md), most important first:
#   1. the GPU unit tests: every CUDA op against the CPU reference (ds_test_backend_ops), the
#      tiny model's loss/gradients and a 30-step run GPU vs CPU (ds_test_model_gpu), casts
#      and NCCL on one rank;
#   2. a training step of the 1b preset (BF16 and FP8 GEMMs): tokens/s and MFU, per-op
#      profiles, each default switched off and the opt-in alone, in one process;
#   3. kernel benchmarks: GEMMs (BF16 cuBLAS, FP8 wgmma/portable, the grouped expert GEMMs),
#      attention (mma.sync and wgmma, each opt-in), MLA decode and its plans, cross-entropy
#      over a 129280 vocabulary and the MoE router;
#   4. the same 1b step in PyTorch on the card (the issue's side-by-side figure);
#   5. Nsight Compute on the hottest kernels (the attention backward, default and opt-ins, in
#      one profiler run; the wgmma grouped GEMM): throughputs, pipes, warp stall reasons;
#   6. ds-pretrain --device cuda and --device cpu on the tiny preset, loss curves side by side,
#      then ds-generate and ds-eval on the GPU-trained checkpoint (cuda and cpu);
#   7. ds-sft, ds-eval generate, ds-rl and ds-convert-fp8 with --device cuda beside --device cpu;
#   8. Nsight Compute on the defaults profiled before (the forward, the grouped GEMM, MLA).
# What the issue asks one run to measure (tests, the step and its PyTorch twin, the kernel
# benchmarks) and what decides the opt-ins (their tests, step variants, kernel timings,
# profiles) come before the tools' GPU-vs-CPU runs, which passed twice on the H200 and check
# the defaults.
# Logs go to $OUT (or gpu-check-out/); each table row is printed when it is made and the
# whole table last. Needs gpu-pack/ from scripts/gpu-pack.sh (binaries, libraries, data). Each
# step has its own time limit, cut to what is left of the whole run's budget (BUDGET, 430 s:
# the run stays under 8 minutes with the unpacking and the device call's margin); a step that
# would get too little time is skipped with an "out of time" row, so a run cut short still
# reports the rows that matter most, which come first. --quick took 229 s and 235 s on the
# H200 (2026-11-30, commits c135dd4 and 029fe18): 19 test processes in 91 s, the step
# benchmarks (the variants' process included) 50 s, the tools 29 s, the kernel benchmarks
# 42 s, PyTorch 23 s. Since then (not yet run): 14 more test groups (35 entries, some run
# only where another failed), 13 more step variants (25), the attention opt-ins', the wgmma
# grouped GEMM's, the MLA plans' and the FP8 quantisers' benchmarks, the faster opt-ins'
# step together, and 5 Nsight Compute runs (the attention backward's variants in one, the
# wgmma grouped GEMM, the defaults' three); about 480-540 s estimated, so a slow run loses the defaults' Nsight rows (profiled
# on 2026-11-30) first, then the tools' runs.
# Usage: bash scripts/gpu-check.sh [--quick]
# GPU_CHECK_TIME_SCALE=K (tests only: the dev preset's sanitizer build, tests/cli) multiplies
# every step's time limit and the default budget by K; the minimum a step needs to start and
# an explicit GPU_CHECK_BUDGET stay as they are.
set -uo pipefail
cd "$(dirname "$0")/.."
P=${GPU_PACK:-gpu-pack}
O=${OUT:-gpu-check-out}
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
mkdir -p "$O"
if [ ! -d "$P/bin" ] && [ -f gpu-carry/gpu-pack.tar.xz ]; then   # what gpu-pack.sh packed
  tar -xJf gpu-carry/gpu-pack.tar.xz || { echo "gpu-check: cannot unpack gpu-carry/gpu-pack.tar.xz" >&2; exit 1; }
fi
export LD_LIBRARY_PATH="$PWD/$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuBLAS/cuBLASLt 13 (shared; the CUDA runtime is linked statically): the toolkit's, else
# the copy PyTorch's wheels carry.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so.13'; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
    [ -e "$d/libcublasLt.so.13" ] && { LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"; break; }
  done
fi
BIN=$P/bin
D=$P/data
T0=$(date +%s)
# The whole run stays within BUDGET seconds (the device call's own limit is a little more), so
# that the summary and the logs always come back: every step's limit is cut to what is left,
# and a step with under 10 s left is skipped.
SCALE=${GPU_CHECK_TIME_SCALE:-1}
BUDGET=${GPU_CHECK_BUDGET:-$(( 430 * SCALE ))}
limit() {   # limit N: N (x SCALE) seconds, or what is left of the budget (minus a margin), >= 1
  local left=$(( BUDGET - ($(date +%s) - T0) - 5 )) n=$(( $1 * SCALE ))
  [ "$left" -lt 1 ] && left=1   # (timeout 0 would mean no limit at all)
  [ "$left" -lt "$n" ] && echo "$left" || echo "$n"
}
room() {   # room N MIN: a step of limit N still gets at least MIN seconds
  [ "$(limit "$1")" -ge "$2" ]
}
declare -a ROWS
declare -A STATUS   # test group -> exit status, for the switches' verdicts
# A row of the final table, also printed at once (a run killed by its time limit keeps them).
row() {
  local r; r=$(printf '%-32s %-6s %s' "$1" "$2" "$3"); ROWS+=("$r"); echo "[row] $r"
}
elapsed() { echo $(( $(date +%s) - T0 ))s; }
summary() {
  echo
  echo "==================== gpu-check summary: $(sed -n 2p "$O/gpu.txt") ===================="
  echo "pack built from commit ${PACKED:-unknown}"
  for r in "${ROWS[@]}"; do echo "$r"; done
  grep -h '^{' "$O"/bench_*.txt > "$O/bench.jsonl" 2>/dev/null
  echo "total $(elapsed)"
}
trap summary EXIT

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
  > "$O/gpu.txt" 2>&1; cat "$O/gpu.txt"
PACKED=$(cat "$P/COMMIT" 2>/dev/null || echo "unknown (no $P/COMMIT)")
echo "pack built from commit $PACKED"

# The sections, in the order above, live in scripts/gpu-check.d/ (sourced: they share this
# script's variables and helpers, and each defines helpers the later ones use).
for part in tests step kernels tools; do
  f=scripts/gpu-check.d/$part.sh
  [ -f "$f" ] || { echo "gpu-check: missing $f" >&2; exit 1; }
  # shellcheck source=/dev/null
  source "$f"
done
